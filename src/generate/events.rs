//! The synthetic `events` table: what customers did besides ordering.
//!
//! This module owns the events' schema, their row buffers and the rules
//! that make one customer's events from that customer's orders: a sign-up,
//! a browsing session before each order placed online (an optional login,
//! page views, then a cart add per item, then a pause before the order),
//! sessions that end in an abandoned cart (no order follows for a week),
//! and e-mail campaigns (sends, opens after sends, clicks after opens).
//! Both `segql generate` and `segql generate --events-from` use it: the
//! first with the items of each order, the second with orders only.
//!
//! Every draw comes from the customer's own events stream
//! ([`STREAM_EVENTS`]), so the events never change the draws of the other
//! tables, and one customer's events depend only on the seed, the customer
//! id and that customer's orders. No event is at or after the `end` given.

use std::fmt::Write;
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::error::DataFusionError;

use super::calendar::{DAY, SECOND, days_from_civil, weekday, year_of};
use super::random::Rng;
use crate::error::Error;

/// The random stream of the events (the catalog draws from 1, the
/// customers and their orders from 2).
pub(crate) const STREAM_EVENTS: u64 = 3;

const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;

/// Share of sessions that start with a login.
const LOGIN: f64 = 0.4;
/// Mean number of pages other than product pages seen in a session.
const NAV_VIEWS: f64 = 0.8;
/// At most this many such pages.
const MAX_NAV_VIEWS: u64 = 5;
/// Share of the items put in the cart whose product page is viewed first.
const PRODUCT_VIEW: f64 = 0.7;
/// Share of sessions with a long pause (the customer comes back later)
/// between the last page view and the first cart add.
const COME_BACK: f64 = 0.15;
/// Chance, per order of a customer and once more, of an abandoned cart.
const ABANDON: f64 = 0.25;
/// Mean number of items beyond the first in an abandoned cart, or in any
/// cart when the orders have no items.
const EXTRA_CART_ITEMS: f64 = 0.3;
/// At most this many items in such a cart.
const MAX_CART_ITEMS: u64 = 5;
/// A cart is abandoned when no order of the customer follows within this
/// long after it (a lead-up lasts well under a day, so the two never mix).
pub(crate) const ABANDON_GAP: i64 = 7 * DAY;
/// Share of customers who receive campaign e-mails at all.
const OPT_IN: f64 = 0.6;
/// Share of those a given campaign is sent to.
const TARGETED: f64 = 0.5;
/// Share of sends opened.
const OPEN: f64 = 0.25;
/// Share of opens clicked.
const CLICK: f64 = 0.2;

/// The campaigns of each year, and the day each is sent.
const CAMPAIGNS: &[(&str, SendDay)] = &[
    ("Spring Sale", SendDay::Fixed(3, 15)),
    ("Summer Sale", SendDay::Fixed(6, 20)),
    ("Black Friday", SendDay::BlackFriday),
    ("Christmas", SendDay::Fixed(12, 5)),
];

/// The day of the year a campaign is sent.
#[derive(Debug, Clone, Copy)]
enum SendDay {
    /// Month and day.
    Fixed(i64, i64),
    /// The Friday after the fourth Thursday of November.
    BlackFriday,
}

impl SendDay {
    /// The day in `year`, counted from 1970-01-01.
    fn in_year(self, year: i64) -> i64 {
        match self {
            Self::Fixed(month, day) => days_from_civil(year, month, day),
            Self::BlackFriday => {
                let november = days_from_civil(year, 11, 1);
                let first_thursday = november + (3 - weekday(november)).rem_euclid(7);
                first_thursday + 22
            }
        }
    }
}

/// One e-mail campaign: its name with the year (`Black Friday 2024`) and
/// when its sends start (08:00 UTC; they go out over two hours).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Campaign {
    pub(crate) name: String,
    pub(crate) at: i64,
}

/// The campaigns sent in `[start, end)`, by time.
pub(crate) fn campaigns(start: i64, end: i64) -> Vec<Campaign> {
    let mut out = Vec::new();
    if end <= start {
        return out;
    }
    for year in year_of(start.div_euclid(DAY))..=year_of((end - 1).div_euclid(DAY)) {
        for (name, day) in CAMPAIGNS {
            let at = day.in_year(year) * DAY + 8 * HOUR;
            if (start..end).contains(&at) {
                out.push(Campaign {
                    name: format!("{name} {year}"),
                    at,
                });
            }
        }
    }
    out.sort_by_key(|c| c.at);
    out
}

/// What happened: the values of the `event` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Signup,
    Login,
    PageView,
    CartAdd,
    EmailSend,
    EmailOpen,
    EmailClick,
}

impl Kind {
    /// Every kind, in the order of [`Kind::index`].
    pub(crate) const ALL: [Kind; 7] = [
        Kind::Signup,
        Kind::Login,
        Kind::PageView,
        Kind::CartAdd,
        Kind::EmailSend,
        Kind::EmailOpen,
        Kind::EmailClick,
    ];

    /// The value of the `event` column.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Signup => "signup",
            Self::Login => "login",
            Self::PageView => "page_view",
            Self::CartAdd => "cart_add",
            Self::EmailSend => "email_send",
            Self::EmailOpen => "email_open",
            Self::EmailClick => "email_click",
        }
    }

    /// Position in [`Kind::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A page of the shop, the `url` of a page view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Page {
    /// `/`
    Home,
    /// `/sale`
    Sale,
    /// `/search`
    Search,
    /// `/c/<category>`, the category's name in lower case with dashes.
    Category(&'static str),
    /// `/p/<product_id>`
    Product(i64),
}

impl Page {
    fn write_url(self, url: &mut String) {
        url.clear();
        match self {
            Self::Home => url.push('/'),
            Self::Sale => url.push_str("/sale"),
            Self::Search => url.push_str("/search"),
            Self::Category(name) => {
                url.push_str("/c/");
                url.extend(name.chars().map(|c| match c {
                    ' ' => '-',
                    c => c.to_ascii_lowercase(),
                }));
            }
            Self::Product(id) => {
                let _ = write!(url, "/p/{id}");
            }
        }
    }
}

/// One event of one customer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Event {
    pub(crate) ts: i64,
    pub(crate) kind: Kind,
    pub(crate) page: Option<Page>,
    pub(crate) product: Option<i64>,
    /// Index into the campaigns given to [`Events::new`].
    pub(crate) campaign: Option<usize>,
    pub(crate) channel: Option<&'static str>,
}

/// A product a session views or puts in the cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Item {
    pub(crate) product: i64,
    pub(crate) category: &'static str,
}

/// One order of a customer, as the events see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Order {
    pub(crate) ts: i64,
    /// Whether a browsing session led up to it (placed online by the
    /// customer, not in a store or as a guest).
    pub(crate) lead_up: bool,
    /// `web` or `app`: the channel of its session.
    pub(crate) channel: &'static str,
    /// Its items, as a range of [`Customer::items`] (empty without items).
    pub(crate) items: Range<usize>,
}

/// What the events of one customer are made from.
#[derive(Debug, Clone)]
pub(crate) struct Customer<'a> {
    pub(crate) id: i64,
    /// When the customer signed up (the `signup` event); no other event
    /// comes before.
    pub(crate) signup: i64,
    /// The channel of the sign-up.
    pub(crate) signup_channel: &'static str,
    /// `web` or `app`: the channel of sessions that lead to no order.
    pub(crate) channel: &'static str,
    /// The customer's orders, by time (guest orders included: they only
    /// keep other sessions away).
    pub(crate) orders: &'a [Order],
    pub(crate) items: &'a [Item],
    /// When the customer was active: abandoned carts fall in this span.
    pub(crate) active: (i64, i64),
}

/// One step of a session being built, and the pause after it.
#[derive(Debug, Clone, Copy)]
struct Step {
    kind: Kind,
    page: Option<Page>,
    product: Option<i64>,
    pause: i64,
}

/// Makes the events of one customer after another.
#[derive(Debug)]
pub(crate) struct Events {
    seed: u64,
    end: i64,
    campaigns: Vec<Campaign>,
    /// The current customer's events, by time.
    buffer: Vec<Event>,
    steps: Vec<Step>,
    cart: Vec<Item>,
}

impl Events {
    /// Events with the given seed, none at or after `end`, with these
    /// campaigns.
    pub(crate) fn new(seed: u64, end: i64, campaigns: Vec<Campaign>) -> Self {
        Self {
            seed,
            end,
            campaigns,
            buffer: Vec::new(),
            steps: Vec::new(),
            cart: Vec::new(),
        }
    }

    /// The events of the last customer, by time.
    pub(crate) fn events(&self) -> &[Event] {
        &self.buffer
    }

    /// The campaigns events refer to by index.
    pub(crate) fn campaigns(&self) -> &[Campaign] {
        &self.campaigns
    }

    /// The events of `customer`, by time. `browse` picks a product for an
    /// abandoned cart (`None` when there are no products to pick from).
    pub(crate) fn customer(
        &mut self,
        customer: &Customer<'_>,
        browse: &mut dyn FnMut(&mut Rng) -> Option<Item>,
    ) -> &[Event] {
        let mut rng = Rng::for_key(self.seed, STREAM_EVENTS, customer.id as u64);
        self.buffer.clear();
        if customer.signup < self.end {
            self.buffer.push(Event {
                ts: customer.signup,
                kind: Kind::Signup,
                page: None,
                product: None,
                campaign: None,
                channel: Some(customer.signup_channel),
            });
        }

        // The lead-up of each order placed online, unless it would not fit
        // between the previous order (or the sign-up) and this one.
        let mut previous = customer.signup;
        for order in customer.orders {
            if order.lead_up {
                let items = &customer.items[order.items.clone()];
                self.session(&mut rng, order.ts, previous, order.channel, items, true);
            }
            previous = previous.max(order.ts);
        }

        self.abandoned_carts(&mut rng, customer, browse);
        self.emails(&mut rng, customer.signup);
        // Stable: events at one instant keep the order they were made in.
        self.buffer.sort_by_key(|e| e.ts);
        &self.buffer
    }

    /// Sessions that end with items in the cart and no order for at least
    /// [`ABANDON_GAP`] after.
    fn abandoned_carts(
        &mut self,
        rng: &mut Rng,
        customer: &Customer<'_>,
        browse: &mut dyn FnMut(&mut Rng) -> Option<Item>,
    ) {
        let (from, until) = (
            customer.active.0.max(customer.signup),
            customer.active.1.min(self.end),
        );
        let mut cart = std::mem::take(&mut self.cart);
        for _ in 0..=customer.orders.len() {
            if !rng.chance(ABANDON) {
                continue;
            }
            let left = from + (rng.unit() * (until - from).max(0) as f64) as i64;
            let left = left - left.rem_euclid(SECOND);
            cart.clear();
            let size = 1 + rng.geometric(EXTRA_CART_ITEMS).min(MAX_CART_ITEMS - 1);
            for _ in 0..size {
                if let Some(item) = browse(rng) {
                    cart.push(item);
                }
            }
            if left <= from || left >= until {
                continue;
            }
            let orders = customer.orders;
            let mark = self.buffer.len();
            let Some(start) = self.session(rng, left, from, customer.channel, &cart, false) else {
                continue;
            };
            let next = orders.partition_point(|o| o.ts < start);
            if orders.get(next).is_some_and(|o| o.ts <= left + ABANDON_GAP) {
                self.buffer.truncate(mark);
            }
        }
        self.cart = cart;
    }

    /// Campaign sends to an opted-in customer who had signed up, opens of
    /// some sends, clicks of some opens, each after the one before.
    fn emails(&mut self, rng: &mut Rng, signup: i64) {
        if !rng.chance(OPT_IN) {
            return;
        }
        for (index, campaign) in self.campaigns.iter().enumerate() {
            if !rng.chance(TARGETED) {
                continue;
            }
            let sent = campaign.at + SECOND * rng.below(2 * 3600) as i64;
            let opened = rng
                .chance(OPEN)
                .then(|| sent + pause(rng, 60, 6 * 3600, 3 * 86_400));
            let clicked = opened
                .filter(|_| rng.chance(CLICK))
                .map(|at| at + pause(rng, 5, 90, 3600));
            if sent <= signup {
                continue;
            }
            for (ts, kind) in [
                (Some(sent), Kind::EmailSend),
                (opened, Kind::EmailOpen),
                (clicked, Kind::EmailClick),
            ] {
                let Some(ts) = ts.filter(|&ts| ts < self.end) else {
                    break;
                };
                self.buffer.push(Event {
                    ts,
                    kind,
                    page: None,
                    product: None,
                    campaign: Some(index),
                    channel: None,
                });
            }
        }
    }

    /// Appends a session that ends at `end`: an optional login, page views
    /// (at least one), then a cart add per item (or a few without a
    /// product when `items` is empty), then, with `checkout`, a pause
    /// before the order at `end`; without it the last cart add is at
    /// `end`. Returns its first instant, or `None` (appending nothing) when
    /// it would not start after `after`.
    fn session(
        &mut self,
        rng: &mut Rng,
        end: i64,
        after: i64,
        channel: &'static str,
        items: &[Item],
        checkout: bool,
    ) -> Option<i64> {
        let mut steps = std::mem::take(&mut self.steps);
        steps.clear();
        if rng.chance(LOGIN) {
            steps.push(Step {
                kind: Kind::Login,
                page: None,
                product: None,
                pause: pause(rng, 5, 20, 60),
            });
        }
        let view = |page, product, pause| Step {
            kind: Kind::PageView,
            page: Some(page),
            product,
            pause,
        };
        for _ in 0..rng.geometric(NAV_VIEWS).min(MAX_NAV_VIEWS) {
            let page = match rng.below(10) {
                0..=3 => Page::Home,
                4..=5 => Page::Sale,
                _ if items.is_empty() => Page::Search,
                _ => Page::Category(rng.pick(items).category),
            };
            steps.push(view(page, None, pause(rng, 10, 60, 600)));
        }
        for item in items {
            if rng.chance(PRODUCT_VIEW) {
                let pause = pause(rng, 10, 60, 600);
                steps.push(view(Page::Product(item.product), Some(item.product), pause));
            }
        }
        if steps.last().is_none_or(|s| s.kind != Kind::PageView) {
            let first = items.first().map(|i| i.product);
            let page = first.map_or(Page::Home, Page::Product);
            steps.push(view(page, first, pause(rng, 10, 60, 600)));
        }
        if rng.chance(COME_BACK)
            && let Some(last) = steps.last_mut()
        {
            last.pause = 30 * MINUTE + pause(rng, 0, 3 * 3600, 12 * 3600);
        }
        let cart = |product, pause| Step {
            kind: Kind::CartAdd,
            page: None,
            product,
            pause,
        };
        if items.is_empty() {
            for _ in 0..1 + rng.geometric(EXTRA_CART_ITEMS).min(MAX_CART_ITEMS - 1) {
                steps.push(cart(None, pause(rng, 5, 40, 400)));
            }
        } else {
            for item in items {
                steps.push(cart(Some(item.product), pause(rng, 5, 40, 400)));
            }
        }
        let checkout_pause = pause(rng, 60, 180, 1800);
        if let Some(last) = steps.last_mut() {
            last.pause = if checkout { checkout_pause } else { 0 };
        }

        // Backwards from the end, each step a pause before the next.
        let total: i64 = steps.iter().map(|s| s.pause).sum();
        let start = end - total;
        let fits = start > after;
        if fits {
            let mut ts = start;
            for step in &steps {
                self.buffer.push(Event {
                    ts,
                    kind: step.kind,
                    page: step.page,
                    product: step.product,
                    campaign: None,
                    channel: Some(channel),
                });
                ts += step.pause;
            }
        }
        self.steps = steps;
        fits.then_some(start)
    }
}

/// A pause of at least `least` seconds plus an exponential one of mean
/// `mean` seconds cut at `most`, in whole seconds (as microseconds).
fn pause(rng: &mut Rng, least: i64, mean: i64, most: i64) -> i64 {
    let extra = rng.exponential(mean as f64).min(most as f64) as i64;
    (least + extra) * SECOND
}

/// `events`: `customer_id`, `event`, `event_ts` (microseconds, in `zone`
/// when given, like the orders' `order_ts`) and the property columns.
pub(crate) fn events_schema(zone: Option<Arc<str>>) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("event", DataType::Utf8, false),
        Field::new(
            "event_ts",
            DataType::Timestamp(TimeUnit::Microsecond, zone),
            false,
        ),
        Field::new("url", DataType::Utf8, true),
        Field::new("product_id", DataType::Int64, true),
        Field::new("campaign", DataType::Utf8, true),
        Field::new("channel", DataType::Utf8, true),
    ]))
}

/// Row buffers of the `events` table, and how many rows of each kind went
/// through them.
#[derive(Debug)]
pub(crate) struct EventRows {
    schema: SchemaRef,
    zone: Option<Arc<str>>,
    customer_id: Int64Builder,
    event: StringBuilder,
    event_ts: TimestampMicrosecondBuilder,
    url: StringBuilder,
    product_id: Int64Builder,
    campaign: StringBuilder,
    channel: StringBuilder,
    /// Rows appended so far, per [`Kind::index`].
    pub(crate) counts: [u64; 7],
    text: String,
}

impl EventRows {
    /// Buffers for instants in `zone` (none: without a time zone).
    pub(crate) fn new(zone: Option<Arc<str>>) -> Self {
        Self {
            schema: events_schema(zone.clone()),
            zone,
            customer_id: Int64Builder::new(),
            event: StringBuilder::new(),
            event_ts: TimestampMicrosecondBuilder::new(),
            url: StringBuilder::new(),
            product_id: Int64Builder::new(),
            campaign: StringBuilder::new(),
            channel: StringBuilder::new(),
            counts: [0; 7],
            text: String::new(),
        }
    }

    /// The schema of the batches.
    pub(crate) fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Rows buffered since the last [`EventRows::finish`].
    pub(crate) fn len(&self) -> usize {
        self.customer_id.len()
    }

    /// Rows appended in all, of every kind.
    pub(crate) fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Appends the events of one customer.
    pub(crate) fn append(&mut self, customer_id: i64, events: &[Event], campaigns: &[Campaign]) {
        for e in events {
            self.customer_id.append_value(customer_id);
            self.event.append_value(e.kind.name());
            self.event_ts.append_value(e.ts);
            match e.page {
                Some(page) => {
                    page.write_url(&mut self.text);
                    self.url.append_value(&self.text);
                }
                None => self.url.append_null(),
            }
            self.product_id.append_option(e.product);
            self.campaign
                .append_option(e.campaign.and_then(|i| campaigns.get(i)).map(|c| &c.name));
            self.channel.append_option(e.channel);
            self.counts[e.kind.index()] += 1;
        }
    }

    /// The buffered rows as a batch; the buffers start again empty.
    pub(crate) fn finish(&mut self) -> Result<RecordBatch, Error> {
        RecordBatch::try_new(
            Arc::clone(&self.schema),
            vec![
                Arc::new(self.customer_id.finish()),
                Arc::new(self.event.finish()),
                Arc::new(self.event_ts.finish().with_timezone_opt(self.zone.clone())),
                Arc::new(self.url.finish()),
                Arc::new(self.product_id.finish()),
                Arc::new(self.campaign.finish()),
                Arc::new(self.channel.finish()),
            ],
        )
        .map_err(|e| Error::DataFusion(DataFusionError::from(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 19_000 * DAY;
    const END: i64 = 19_365 * DAY;

    fn item(product: i64) -> Item {
        Item {
            product,
            category: "Coffee tables",
        }
    }

    /// A customer who signs up on the first day and orders every ten days
    /// (every third order in a store, the items of order `n` products
    /// `10n..10n+3`).
    fn orders() -> (Vec<Order>, Vec<Item>) {
        let mut orders = Vec::new();
        let mut items = Vec::new();
        for n in 0..30 {
            let from = items.len();
            items.extend((0..=n % 3).map(|k| item(10 * n + k)));
            orders.push(Order {
                ts: START + (10 * n + 1) * DAY + 13 * HOUR,
                lead_up: n % 3 != 2,
                channel: "app",
                items: from..items.len(),
            });
        }
        (orders, items)
    }

    fn events_of(id: i64, orders: &[Order], items: &[Item]) -> (Vec<Event>, Vec<Campaign>) {
        let mut maker = Events::new(42, END, campaigns(START, END));
        let customer = Customer {
            id,
            signup: START + HOUR,
            signup_channel: "store",
            channel: "web",
            orders,
            items,
            active: (START, END),
        };
        let events = maker
            .customer(&customer, &mut |rng| Some(item(1000 + rng.below(5) as i64)))
            .to_vec();
        (events, maker.campaigns().to_vec())
    }

    #[test]
    fn generate_campaigns_fall_on_their_days() {
        let start = days_from_civil(2022, 1, 1) * DAY;
        let end = days_from_civil(2025, 1, 1) * DAY;
        let all = campaigns(start, end);
        assert_eq!(all.len(), 12);
        let day = |y, m, d| days_from_civil(y, m, d) * DAY + 8 * HOUR;
        assert_eq!(
            &all[8..],
            [
                Campaign {
                    name: "Spring Sale 2024".into(),
                    at: day(2024, 3, 15)
                },
                Campaign {
                    name: "Summer Sale 2024".into(),
                    at: day(2024, 6, 20)
                },
                Campaign {
                    name: "Black Friday 2024".into(),
                    at: day(2024, 11, 29)
                },
                Campaign {
                    name: "Christmas 2024".into(),
                    at: day(2024, 12, 5)
                },
            ]
        );
        // Black Friday 2011 and 2022 were on the 25th.
        assert_eq!(
            SendDay::BlackFriday.in_year(2011),
            days_from_civil(2011, 11, 25)
        );
        assert_eq!(
            SendDay::BlackFriday.in_year(2022),
            days_from_civil(2022, 11, 25)
        );
        // Only the ones inside the range, from its first instant.
        let names: Vec<String> = campaigns(
            days_from_civil(2010, 12, 1) * DAY,
            days_from_civil(2011, 12, 10) * DAY,
        )
        .into_iter()
        .map(|c| c.name)
        .collect();
        assert_eq!(
            names,
            [
                "Christmas 2010",
                "Spring Sale 2011",
                "Summer Sale 2011",
                "Black Friday 2011",
                "Christmas 2011"
            ]
        );
        assert!(campaigns(end, start).is_empty());
    }

    #[test]
    fn generate_pages_have_urls() {
        let url = |page: Page| {
            let mut text = String::from("stale");
            page.write_url(&mut text);
            text
        };
        assert_eq!(url(Page::Home), "/");
        assert_eq!(url(Page::Sale), "/sale");
        assert_eq!(url(Page::Search), "/search");
        assert_eq!(url(Page::Category("Coffee tables")), "/c/coffee-tables");
        assert_eq!(url(Page::Product(1234)), "/p/1234");
    }

    #[test]
    fn generate_lead_ups_come_before_their_orders() {
        let (orders, items) = orders();
        let (events, _) = events_of(7, &orders, &items);
        assert!(events.windows(2).all(|w| w[0].ts <= w[1].ts));
        assert_eq!(events[0].kind, Kind::Signup);
        assert_eq!(events[0].ts, START + HOUR);
        assert_eq!(events[0].channel, Some("store"));
        assert!(events.iter().all(|e| e.ts < END));

        for (n, order) in orders.iter().enumerate() {
            // A lead-up lasts under a day and follows the previous order.
            let lead_up: Vec<&Event> = events
                .iter()
                .filter(|e| e.ts < order.ts && e.ts > order.ts - DAY)
                .filter(|e| matches!(e.kind, Kind::PageView | Kind::CartAdd | Kind::Login))
                .collect();
            if !order.lead_up {
                assert!(lead_up.is_empty(), "order {n}: {lead_up:?}");
                continue;
            }
            let carts: Vec<&&Event> = lead_up.iter().filter(|e| e.kind == Kind::CartAdd).collect();
            let views: Vec<&&Event> = lead_up
                .iter()
                .filter(|e| e.kind == Kind::PageView)
                .collect();
            let products: Vec<Option<i64>> = carts.iter().map(|e| e.product).collect();
            let expected: Vec<Option<i64>> = items[order.items.clone()]
                .iter()
                .map(|i| Some(i.product))
                .collect();
            assert_eq!(products, expected, "order {n}");
            assert!(!views.is_empty(), "order {n}");
            let first_cart = carts.iter().map(|e| e.ts).min().unwrap();
            let last_cart = carts.iter().map(|e| e.ts).max().unwrap();
            assert!(views.iter().all(|v| v.ts < first_cart), "order {n}");
            assert!(last_cart < order.ts, "order {n}");
            assert!(
                lead_up.iter().all(|e| e.channel == Some("app")),
                "order {n}"
            );
            for view in views {
                match view.page {
                    Some(Page::Product(id)) => assert_eq!(view.product, Some(id)),
                    Some(_) => assert_eq!(view.product, None),
                    None => panic!("a page view without a page"),
                }
            }
        }
    }

    #[test]
    fn generate_abandoned_carts_have_no_order_after_them() {
        let (orders, items) = orders();
        let mut abandoned = 0;
        for id in 1..200 {
            let (events, _) = events_of(id, &orders, &items);
            for cart in events.iter().filter(|e| e.kind == Kind::CartAdd) {
                let next = orders.iter().find(|o| o.ts > cart.ts);
                if next.is_some_and(|o| o.ts - cart.ts < DAY && o.lead_up) {
                    continue;
                }
                abandoned += 1;
                assert!(
                    next.is_none_or(|o| o.ts > cart.ts + ABANDON_GAP),
                    "{cart:?}"
                );
                assert_eq!(cart.channel, Some("web"));
                assert!(cart.product.is_some_and(|p| (1000..1005).contains(&p)));
            }
        }
        assert!(abandoned > 100, "{abandoned}");
    }

    #[test]
    fn generate_emails_are_opened_after_they_are_sent() {
        let (orders, items) = orders();
        let (mut sends, mut opens, mut clicks) = (0, 0, 0);
        for id in 1..300 {
            let (events, campaigns) = events_of(id, &orders, &items);
            for (index, campaign) in campaigns.iter().enumerate() {
                let at = |kind| {
                    let found: Vec<i64> = events
                        .iter()
                        .filter(|e| e.kind == kind && e.campaign == Some(index))
                        .map(|e| e.ts)
                        .collect();
                    assert!(found.len() <= 1, "{found:?}");
                    found.first().copied()
                };
                let (sent, opened, clicked) = (
                    at(Kind::EmailSend),
                    at(Kind::EmailOpen),
                    at(Kind::EmailClick),
                );
                if let Some(sent) = sent {
                    sends += 1;
                    assert!((campaign.at..campaign.at + 2 * HOUR).contains(&sent));
                }
                if let Some(opened) = opened {
                    opens += 1;
                    assert!(opened > sent.unwrap());
                }
                if let Some(clicked) = clicked {
                    clicks += 1;
                    assert!(clicked > opened.unwrap());
                }
            }
        }
        // 299 customers, 60% opted in, half of the 4 campaigns each.
        assert!((250..470).contains(&sends), "{sends}");
        assert!(opens > sends / 6 && opens < sends / 3, "{opens}");
        assert!(clicks > 0 && clicks < opens / 2, "{clicks}");
    }

    #[test]
    fn generate_events_depend_on_the_seed_and_customer_only() {
        let (orders, items) = orders();
        assert_eq!(events_of(5, &orders, &items), events_of(5, &orders, &items));
        assert_ne!(
            events_of(5, &orders, &items).0,
            events_of(6, &orders, &items).0
        );
    }

    #[test]
    fn generate_a_lead_up_needs_room_after_the_previous_order() {
        let items = [item(1)];
        let order = |ts| Order {
            ts,
            lead_up: true,
            channel: "web",
            items: 0..1,
        };
        // Three orders a second apart: only the first has room for its
        // session.
        let orders = [
            order(START + 5 * DAY),
            order(START + 5 * DAY + SECOND),
            order(START + 5 * DAY + 2 * SECOND),
        ];
        for id in 1..50 {
            let (events, _) = events_of(id, &orders, &items);
            let near = |e: &&Event| e.ts > START + 4 * DAY && e.ts < START + 5 * DAY + 2 * SECOND;
            let carts = events
                .iter()
                .filter(near)
                .filter(|e| e.kind == Kind::CartAdd);
            assert_eq!(carts.count(), 1, "{events:?}");
        }
    }

    #[test]
    fn generate_event_rows_hold_the_properties() {
        let campaigns = vec![Campaign {
            name: "Spring Sale 2024".into(),
            at: 0,
        }];
        let mut rows = EventRows::new(Some("Europe/London".into()));
        let event = |kind, page, product, campaign, channel| Event {
            ts: 1_000,
            kind,
            page,
            product,
            campaign,
            channel,
        };
        rows.append(
            9,
            &[
                event(
                    Kind::PageView,
                    Some(Page::Product(3)),
                    Some(3),
                    None,
                    Some("app"),
                ),
                event(Kind::EmailOpen, None, None, Some(0), None),
            ],
            &campaigns,
        );
        assert_eq!(rows.len(), 2);
        let batch = rows.finish().unwrap();
        assert_eq!(rows.len(), 0);
        assert_eq!(rows.total(), 2);
        assert_eq!(rows.counts[Kind::PageView.index()], 1);
        assert_eq!(batch.schema(), events_schema(Some("Europe/London".into())));
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&[batch])
            .unwrap()
            .to_string();
        assert_eq!(
            text,
            "+-------------+------------+-------------------------------+------+------------+------------------+---------+\n\
             | customer_id | event      | event_ts                      | url  | product_id | campaign         | channel |\n\
             +-------------+------------+-------------------------------+------+------------+------------------+---------+\n\
             | 9           | page_view  | 1970-01-01T01:00:00.001+01:00 | /p/3 | 3          |                  | app     |\n\
             | 9           | email_open | 1970-01-01T01:00:00.001+01:00 |      |            | Spring Sale 2024 |         |\n\
             +-------------+------------+-------------------------------+------+------------+------------------+---------+"
        );
    }
}
