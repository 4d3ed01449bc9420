//! What the storm does to Herald: outages of a service (a stop command, a wait, a start command, timed
//! from the test's side), and workers SIGKILLed at random and replaced, with a process manager's restart
//! of those that exit by themselves.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::herald_processes::{self, Logs, Process};

/// An outage as the test saw it.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// The stop command was issued (the service may be going away from here on).
    pub stopping: Instant,
    /// The stop command returned.
    pub down: Instant,
    /// The start command was issued.
    pub restarting: Instant,
}

impl Window {
    /// Whether an answer received at `at` was certainly produced during the outage: after the stop
    /// command returned plus `in_flight` (an answer to a request committed just before may still be on
    /// its way), and before the start command was issued.
    pub fn holds(&self, at: Instant, in_flight: Duration) -> bool {
        at > self.down + in_flight && at < self.restarting
    }

    /// Whether the span from `from` to `to` meets the outage, from the stop command to the start command.
    pub fn meets(&self, from: Instant, to: Instant) -> bool {
        to >= self.stopping && from < self.restarting
    }

    pub fn length(&self) -> Duration {
        self.restarting.duration_since(self.down)
    }
}

/// At `at`, runs `stop`, waits `hold`, runs `start` (each on a blocking thread).
pub async fn outage(
    at: Instant,
    hold: Duration,
    stop: impl FnOnce() + Send + 'static,
    start: impl FnOnce() + Send + 'static,
) -> Window {
    tokio::time::sleep_until(at.into()).await;
    let stopping = Instant::now();
    tokio::task::spawn_blocking(stop).await.expect("the stop command");
    let down = Instant::now();
    tokio::time::sleep(hold).await;
    let restarting = Instant::now();
    tokio::task::spawn_blocking(start).await.expect("the start command");
    Window { stopping, down, restarting }
}

/// How the workers were treated.
#[derive(Debug)]
pub struct Kills {
    /// The workers running at the end: kept until the test ends, stopped (SIGTERM) when dropped.
    pub _workers: Vec<Process>,
    /// When each SIGKILL was sent.
    pub at: Vec<Instant>,
    /// How the workers that exited by themselves ended (a worker started while the database is down
    /// exits at once: it cannot connect).
    pub exited_alone: Vec<String>,
}

/// Until `until`, every `every` SIGKILLs a random worker and starts another in its place, and, every
/// `restart_after`, restarts those that exited by themselves.
pub async fn kill_workers(
    mut workers: Vec<Process>,
    env: Vec<(String, String)>,
    logs: Arc<Logs>,
    (every, restart_after): (Duration, Duration),
    until: Instant,
) -> Kills {
    let (mut at, mut exited_alone, mut started) = (Vec::new(), Vec::new(), workers.len());
    let mut next_kill = Instant::now() + every;
    let mut ticker = tokio::time::interval(restart_after);
    loop {
        ticker.tick().await;
        for worker in &mut workers {
            if let Some(status) = worker.exited() {
                exited_alone.push(status.to_string());
                *worker = herald_processes::start_worker(&env, &logs, started);
                started += 1;
            }
        }
        if Instant::now() >= until {
            return Kills { _workers: workers, at, exited_alone };
        }
        if Instant::now() >= next_kill {
            next_kill += every;
            let victim = (uuid::Uuid::new_v4().as_u128() % workers.len() as u128) as usize;
            workers.swap_remove(victim).kill();
            at.push(Instant::now());
            workers.push(herald_processes::start_worker(&env, &logs, started));
            started += 1;
        }
    }
}
