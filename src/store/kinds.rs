//! The names of the store's tables, the versions a commit record holds,
//! and the kinds of change: small types every part of the store shares.

/// A table of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StoreTable {
    /// Segment definitions, one row per version.
    Segments,
    /// One row per stay of a customer in a segment.
    Membership,
    /// Entered / exited events.
    Events,
    /// The size of each segment after each refresh.
    Sizes,
    /// One row per completed change of the store: its commit record.
    Refreshes,
}

impl StoreTable {
    /// The tables a change writes, in the order their versions are
    /// recorded in `segment_refreshes`.
    pub const DATA: [StoreTable; 4] = [Self::Segments, Self::Membership, Self::Events, Self::Sizes];

    /// Every table, the commit log last.
    pub const ALL: [StoreTable; 5] = [
        Self::Segments,
        Self::Membership,
        Self::Events,
        Self::Sizes,
        Self::Refreshes,
    ];

    /// The table's name: its folder in the store and its name in SQL.
    pub fn name(self) -> &'static str {
        match self {
            Self::Segments => "segments",
            Self::Membership => "segment_membership",
            Self::Events => "segment_events",
            Self::Sizes => "segment_sizes",
            Self::Refreshes => "segment_refreshes",
        }
    }

    /// The column of `segment_refreshes` holding this table's version.
    pub fn version_column(self) -> &'static str {
        match self {
            Self::Segments => "segments_version",
            Self::Membership => "membership_version",
            Self::Events => "events_version",
            Self::Sizes => "sizes_version",
            Self::Refreshes => "refresh_id",
        }
    }
}

impl std::fmt::Display for StoreTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The version each data table reached, as a commit record names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableVersions {
    pub segments: u64,
    pub membership: u64,
    pub events: u64,
    pub sizes: u64,
}

impl TableVersions {
    /// The version of a data table (`segment_refreshes` has none here).
    pub fn get(&self, table: StoreTable) -> u64 {
        match table {
            StoreTable::Segments => self.segments,
            StoreTable::Membership => self.membership,
            StoreTable::Events => self.events,
            StoreTable::Sizes | StoreTable::Refreshes => self.sizes,
        }
    }

    /// Sets the version of a data table.
    pub fn set(&mut self, table: StoreTable, version: u64) {
        match table {
            StoreTable::Segments => self.segments = version,
            StoreTable::Membership => self.membership = version,
            StoreTable::Events => self.events = version,
            StoreTable::Sizes | StoreTable::Refreshes => self.sizes = version,
        }
    }
}

/// What kind of change a commit record closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Create,
    Alter,
    Drop,
    Refresh,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Alter => "alter",
            Self::Drop => "drop",
            Self::Refresh => "refresh",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "create" => Self::Create,
            "alter" => Self::Alter,
            "drop" => Self::Drop,
            "refresh" => Self::Refresh,
            _ => return None,
        })
    }
}
