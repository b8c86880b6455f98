//! The project-file parser over any text: a configuration or an error
//! that names the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match segql::Config::from_toml(text, "/segql-fuzz/absent/segql.toml") {
        Ok(config) => {
            let _ = (config.zone(), config.store_path(), config.origin());
            config
                .rfm
                .check()
                .expect("a loaded scheme passes its own check");
        }
        Err(error) => {
            let message = error.to_string();
            assert!(!message.is_empty());
        }
    }
});
