//! Puts this process's stored events on its bus in cursor order.
//!
//! Stored events reach a process two ways: its own publishes, right after commit,
//! and the other instances' through the Redis relay. Neither comes in cursor order:
//! two transactions commit in the other order from the one their outbox ids were
//! handed out in, a relayed event comes a moment after a local one written later,
//! and Redis pub/sub forgets what it could not deliver. A feed of one video orders
//! by the video's `seq`; a user-wide `videoEvents` feed only has the global cursor,
//! and a client resumes after the last cursor it received. Had event 9 been sent
//! before event 3, a client that went away after 9 would never get 3.
//!
//! So every stored event goes through the sequencer, which keeps the newest cursor
//! it delivered (`position`) and holds back what comes after a missing cursor:
//! - the missing event usually arrives within milliseconds (the other path);
//! - if not, the outbox is read (`GAP_READ_AFTER`, then every `GAP_READ_EVERY`):
//!   an event whose publish was lost is in the table, since publishing follows
//!   the commit;
//! - a cursor still missing after `events.order_grace_ms` belongs to a transaction
//!   that rolled back (PostgreSQL hands out ids that are never committed) or one
//!   still open: it is passed over, remembered, and looked for in the outbox for a
//!   while (`SKIPPED_KEPT`); if it turns up, it is delivered late rather than never.
//!
//! The outbox is also read every `events.tail_poll_ms` and when the relay
//! reconnects, so an event whose publish was lost is delivered even when no later
//! event points at the gap. PROGRESS events are not stored; one arriving while
//! events are held back waits behind them (only a video's newest: the next one
//! supersedes it anyway). No stored event is dropped but a duplicate (a cursor
//! delivered recently).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, Mutex};
use tokio::time::Instant;

use super::DomainEvent;
use crate::actors::Hub;
use crate::config::events::EventSettings;
use crate::events::bus::EventBus;
use crate::events::bus::{BusMessage, Publish};

/// How long a gap waits for its event on the other path before the outbox is read.
const GAP_READ_AFTER: Duration = Duration::from_millis(20);
/// How often the outbox is read again while a gap stays open.
const GAP_READ_EVERY: Duration = Duration::from_millis(100);
/// Rows read per outbox query.
const READ_PAGE: u64 = 500;
/// Cursors remembered as delivered, to drop a second copy (a relayed event the
/// outbox read already delivered, a duplicate publish).
const DELIVERED_KEPT: usize = 8192;
/// How long a passed-over cursor is looked for in the outbox.
const SKIPPED_KEPT: Duration = Duration::from_secs(300);
/// At most this many passed-over cursors are looked for.
const SKIPPED_MAX: usize = 1024;

enum Input {
    Event(Arc<DomainEvent>),
    /// Read the outbox now (the relay reconnected: what was published meanwhile is lost).
    ReadOutbox,
}

/// The handle publishers and the relay hand events to. Cheap to clone.
#[derive(Clone)]
pub struct Sequencer {
    input: mpsc::UnboundedSender<Input>,
    /// The receiving end, taken by the running task (and again by a restarted one).
    task: Arc<Mutex<mpsc::UnboundedReceiver<Input>>>,
}

impl Sequencer {
    pub fn new() -> Self {
        let (input, receiver) = mpsc::unbounded_channel();
        Self { input, task: Arc::new(Mutex::new(receiver)) }
    }

    /// Hand over an event (stored or PROGRESS) for this process's bus.
    pub fn submit(&self, event: Arc<DomainEvent>) {
        let _ = self.input.send(Input::Event(event));
    }

    /// Ask for an outbox read (after the relay lost and regained Redis).
    pub fn read_outbox(&self) {
        let _ = self.input.send(Input::ReadOutbox);
    }

    /// Run until the process ends (started under `supervise`; a restarted run starts
    /// again from the newest stored cursor).
    pub async fn run(&self, db: DatabaseConnection, bus: Hub<EventBus>, settings: EventSettings) {
        let mut input = self.task.lock().await;
        let position = loop {
            match crate::repo::outbox::newest_cursor(&db).await {
                Ok(newest) => break newest.unwrap_or(0),
                Err(err) => {
                    tracing::warn!(error = %err, "event sequencer cannot read the outbox yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let mut state = State::new(position, bus, settings);
        loop {
            let wake = state.next_wake();
            // Checked before waiting too: a steady stream of events must not keep a
            // gap from being read for, or passed over.
            if Instant::now() >= wake {
                state.on_timer(&db).await;
                continue;
            }
            tokio::select! {
                biased;
                message = input.recv() => match message {
                    Some(Input::Event(event)) => state.accept(event),
                    Some(Input::ReadOutbox) => state.read_outbox(&db).await,
                    None => return,
                },
                _ = tokio::time::sleep_until(wake) => state.on_timer(&db).await,
            }
        }
    }
}

impl Default for Sequencer {
    fn default() -> Self {
        Self::new()
    }
}

struct State {
    /// The newest cursor delivered in order.
    position: i64,
    /// Stored events after a gap, by cursor.
    held: BTreeMap<i64, Arc<DomainEvent>>,
    /// PROGRESS that came while events were held back (the newest per video).
    held_progress: Vec<Arc<DomainEvent>>,
    /// When the current gap opened, and when the outbox was last read for it.
    gap_since: Option<Instant>,
    gap_read_at: Option<Instant>,
    delivered: VecDeque<i64>,
    delivered_set: HashSet<i64>,
    /// Cursors passed over, with when.
    skipped: BTreeMap<i64, Instant>,
    last_poll: Instant,
    bus: Hub<EventBus>,
    grace: Duration,
    poll_every: Duration,
}

impl State {
    fn new(position: i64, bus: Hub<EventBus>, settings: EventSettings) -> Self {
        Self {
            position,
            held: BTreeMap::new(),
            held_progress: Vec::new(),
            gap_since: None,
            gap_read_at: None,
            delivered: VecDeque::new(),
            delivered_set: HashSet::new(),
            skipped: BTreeMap::new(),
            last_poll: Instant::now(),
            bus,
            grace: Duration::from_millis(settings.order_grace_ms),
            poll_every: Duration::from_millis(settings.tail_poll_ms.max(50)),
        }
    }

    fn next_wake(&self) -> Instant {
        match (self.gap_since, self.gap_read_at) {
            (Some(since), None) => since + GAP_READ_AFTER,
            (Some(_), Some(read)) => read + GAP_READ_EVERY,
            (None, _) => self.last_poll + self.poll_every,
        }
    }

    fn deliver(&mut self, event: Arc<DomainEvent>) {
        if let Some(cursor) = event.cursor {
            if self.delivered.len() == DELIVERED_KEPT {
                if let Some(oldest) = self.delivered.pop_front() {
                    self.delivered_set.remove(&oldest);
                }
            }
            self.delivered.push_back(cursor);
            self.delivered_set.insert(cursor);
        }
        self.bus.addr().do_send(Publish(BusMessage::Video(event)));
    }

    fn accept(&mut self, event: Arc<DomainEvent>) {
        let Some(cursor) = event.cursor else {
            if self.held.is_empty() {
                self.deliver(event);
            } else {
                // Only the newest of a video's progress is worth sending late.
                self.held_progress.retain(|held| held.video_id != event.video_id);
                self.held_progress.push(event);
            }
            return;
        };
        if self.delivered_set.contains(&cursor) {
            return;
        }
        if cursor <= self.position {
            // Passed over (or older than this process's start): late, not lost.
            if self.skipped.remove(&cursor).is_some() {
                metrics::counter!("reelhouse_event_order_gaps_total", "outcome" => "late").increment(1);
            }
            self.deliver(event);
            return;
        }
        self.held.entry(cursor).or_insert(event);
        self.release();
    }

    /// Deliver what follows the position without a gap.
    fn release(&mut self) {
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() != self.position + 1 {
                break;
            }
            self.position = *entry.key();
            let event = entry.remove();
            self.deliver(event);
        }
        if self.held.is_empty() {
            if self.gap_since.take().is_some() {
                metrics::counter!("reelhouse_event_order_gaps_total", "outcome" => "filled").increment(1);
            }
            self.gap_read_at = None;
            for progress in std::mem::take(&mut self.held_progress) {
                self.deliver(progress);
            }
        } else if self.gap_since.is_none() {
            self.gap_since = Some(Instant::now());
        }
    }

    async fn on_timer(&mut self, db: &DatabaseConnection) {
        match self.gap_since {
            Some(since) => {
                self.gap_read_at = Some(Instant::now());
                let upto = self.held.last_key_value().map(|(cursor, _)| *cursor);
                // Only a read that worked tells a missing cursor is not committed:
                // while the database is unreachable, events wait.
                let read = self.read_rows(db, upto).await;
                if read.is_some() && self.gap_since.is_some() && since.elapsed() >= self.grace {
                    self.pass_over();
                }
            }
            None => self.read_outbox(db).await,
        }
    }

    /// Give up waiting for the missing cursors before the first held event.
    fn pass_over(&mut self) {
        let Some(first) = self.held.first_key_value().map(|(cursor, _)| *cursor) else { return };
        let now = Instant::now();
        for missing in self.position + 1..first {
            if self.skipped.len() < SKIPPED_MAX {
                self.skipped.insert(missing, now);
            }
            metrics::counter!("reelhouse_event_order_gaps_total", "outcome" => "passed_over").increment(1);
        }
        tracing::debug!(
            from = self.position + 1,
            to = first - 1,
            "event cursors passed over (rolled back or still open)"
        );
        self.position = first - 1;
        self.gap_since = None;
        self.release();
    }

    /// The periodic read: stored events after the position, and passed-over cursors.
    async fn read_outbox(&mut self, db: &DatabaseConnection) {
        self.last_poll = Instant::now();
        loop {
            let before = self.position;
            let read = self.read_rows(db, None).await.unwrap_or(0);
            // A full page that moved the position: more may be stored.
            if read < READ_PAGE as usize || self.position == before {
                break;
            }
        }
        self.skipped.retain(|_, at| at.elapsed() < SKIPPED_KEPT);
        if self.skipped.is_empty() {
            return;
        }
        let ids: Vec<i64> = self.skipped.keys().copied().collect();
        match crate::repo::outbox::by_cursors(db, ids).await {
            Ok(rows) => {
                for row in &rows {
                    if let Ok(event) = DomainEvent::from_outbox(row) {
                        self.accept(Arc::new(event));
                    }
                }
            }
            Err(err) => tracing::debug!(error = %err, "reading passed-over events failed"),
        }
    }

    /// Read stored events after the position (up to `upto`) and take them in.
    /// Returns how many rows were read (`None`: the read failed).
    async fn read_rows(&mut self, db: &DatabaseConnection, upto: Option<i64>) -> Option<usize> {
        match crate::repo::outbox::after_position(db, self.position, upto, READ_PAGE).await {
            Ok(rows) => {
                for row in &rows {
                    if let Ok(event) = DomainEvent::from_outbox(row) {
                        self.accept(Arc::new(event));
                    }
                }
                Some(rows.len())
            }
            Err(err) => {
                tracing::debug!(error = %err, "the event sequencer could not read the outbox");
                None
            }
        }
    }
}
