//! Redraw cost of the console with a large store: 100,000 sessions (and as
//! many tokens) loaded, drawn into an off-screen 200×50 terminal. Prints the
//! median and p99 of a redraw, of a redraw after a filter keystroke, and of
//! applying a live event, so the figure can be rerun:
//!
//! ```sh
//! cargo run --release -p sigil-console --example redraw_bench
//! ```

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ratatui::{Terminal, backend::TestBackend};
use sigil_console::{action::Action, app::App, messages::Update, ui};
use sigil_proto::pb;

const ROWS: usize = 100_000;

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

fn main() {
    let now = SystemTime::now();
    let base = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let sessions: Vec<pb::Session> = (0..ROWS)
        .map(|n| pb::Session {
            session_id: format!("{n:08x}-0000-7000-8000-000000000000"),
            user_id: format!("user-{}", n % 5000),
            username: format!("user{}", n % 5000),
            state: pb::SessionState::Active.into(),
            created_at: ts(base - n as i64),
            last_seen_at: ts(base - 5),
            expires_at: ts(base + 86_400),
            client_address: format!("10.{}.{}.{}:443", n % 200, n % 100, n % 50),
            user_agent: "grpc-go/1.70".into(),
            device_name: format!("device-{n}"),
            ..Default::default()
        })
        .collect();
    let mut app = App::new("http://127.0.0.1:50051", "admin", now);
    let load = Instant::now();
    app.update(Action::Backend(Update::Sessions(sessions)));
    println!("load {ROWS} sessions into the console: {:?}", load.elapsed());

    let mut terminal = match Terminal::new(TestBackend::new(200, 50)) {
        Ok(t) => t,
        Err(e) => return eprintln!("cannot create the test terminal: {e}"),
    };
    let Ok(size) = terminal.size();
    app.update(Action::Resize(size));
    let mut redraw = |app: &App| {
        let start = Instant::now();
        let _ = terminal.draw(|frame| ui::draw(frame, app));
        start.elapsed()
    };

    let mut plain = Vec::new();
    for i in 0..200 {
        app.update(if i % 2 == 0 { Action::PageDown } else { Action::Down });
        plain.push(redraw(&app));
    }
    report("redraw while scrolling", &mut plain);

    let mut filtered = Vec::new();
    for c in "device-9".chars().cycle().take(40) {
        let start = Instant::now();
        app.update(if c == '9' { Action::FilterBackspace } else { Action::FilterChar(c) });
        let applied = start.elapsed();
        filtered.push(applied + redraw(&app));
    }
    report("filter keystroke + redraw", &mut filtered);

    let mut events = Vec::new();
    for n in 0..200 {
        let event = pb::Event {
            sequence: n as u64 + 1,
            kind: pb::EventKind::SessionRevoked.into(),
            session_id: format!("{:08x}-0000-7000-8000-000000000000", n * 97),
            occurred_at: ts(base),
            ..Default::default()
        };
        let start = Instant::now();
        app.update(Action::Backend(Update::Event(event)));
        events.push(start.elapsed() + redraw(&app));
    }
    report("live revocation event + redraw", &mut events);
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];
    println!("{what}: median {median:?}, p99 {p99:?} ({} samples)", samples.len());
}
