//! One benchmark run, start to end: receiver, webhooks, warm-up, Herald's part (events sent, deliveries
//! awaited, processes and service groups watched), clean-up of the webhooks (also on error and Ctrl-C), raw ceiling, report.

use std::{
    io::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow};
use uuid::Uuid;

use crate::{
    Cli,
    api::{Api, BENCH_DESCRIPTION},
    ceiling::{self, Ceiling},
    cpu::{self, CpuPerEvent},
    driver::{self, Ingest, IngestResult, LATE_AFTER},
    procstat::{self, Monitor, ProcessStats},
    receiver::{Endpoint, EndpointResult, Receiver, lock},
    report::{Report, latency},
    scenario::{Behavior, Load, Plan, RETRY_HINT, Scenario},
};

/// How long the warm-up may take before the run gives up.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the benchmark and prints its report; returns the verdict.
pub async fn run(cli: Cli) -> anyhow::Result<bool> {
    let started_at = chrono::Utc::now();
    let started = Instant::now();
    let plan = Plan::resolve(
        cli.scenario,
        &crate::scenario::Overrides {
            events: cli.events,
            concurrency: cli.concurrency,
            rate: cli.rate,
            duration_s: cli.duration,
        },
    )?;
    if cli.ceiling_concurrency == Some(0) {
        return Err(anyhow!("--ceiling-concurrency must be at least 1"));
    }
    let services = cpu::select(&cli.services)?;
    let api = Arc::new(Api::new(&cli.url, &cli.key)?);
    let (receiver, address) = Receiver::start().await.context("starting the receiver")?;
    let created = Mutex::new(Vec::new());
    let outcome = tokio::select! {
        outcome = Box::pin(bench(&cli, &plan, services, &api, &receiver, address, &created)) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    if !cli.keep_webhooks || outcome.is_err() {
        delete_webhooks(&api, &created).await;
    }
    let (herald, ceiling) = outcome?;
    let report = build_report(&cli, &plan, herald, ceiling, started_at, started.elapsed());
    let mut out = std::io::stdout().lock();
    write!(out, "{}", report.table())?;
    if report.scenario == Scenario::Retry && report.lost > 0 {
        writeln!(out, "hint: deliveries are missing; {RETRY_HINT}")?;
    }
    if let Some(path) = &cli.json {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        writeln!(out, "report written to {}", path.display())?;
    }
    writeln!(out, "{}", report.summary())?;
    Ok(report.passed)
}

/// What Herald's part measured.
#[derive(Debug)]
struct Herald {
    ingest: IngestResult,
    /// Per endpoint, with its behaviour.
    endpoints: Vec<(Behavior, EndpointResult)>,
    processes: Vec<ProcessStats>,
    /// The service groups and the machine over the same window.
    services: cpu::Measured,
    elapsed: Duration,
}

async fn bench(
    cli: &Cli,
    plan: &Plan,
    services: cpu::Selection,
    api: &Arc<Api>,
    receiver: &Receiver,
    address: SocketAddr,
    created: &Mutex<Vec<Uuid>>,
) -> anyhow::Result<(Herald, Option<Ceiling>)> {
    warn_about_existing_webhooks(api).await?;
    eprintln!("creating {} webhook(s) to the receiver at http://{address}/hook/…", plan.endpoints.len());
    let mut endpoints = Vec::with_capacity(plan.endpoints.len());
    for behavior in &plan.endpoints {
        let n = receiver.add_endpoint(*behavior);
        let webhook = api.create_webhook(&format!("http://{address}/hook/{n}")).await?;
        lock(created).push(webhook.id);
        let endpoint = receiver.endpoint(n).context("the endpoint was just added")?;
        endpoint.set_secret(webhook.secret);
        endpoints.push(endpoint);
    }
    eprintln!("warming up (one probe event through the whole pipeline)…");
    let warm_up = Instant::now();
    driver::warm_up(api, &endpoints, WARM_UP_TIMEOUT).await?;
    eprintln!("warm-up done in {} ms", warm_up.elapsed().as_millis());
    endpoints.iter().for_each(|e| e.reset());
    receiver.set_inject_failures(plan.scenario == Scenario::Retry);

    let herald = herald_part(cli, plan, services, api, &endpoints).await;
    if !cli.keep_webhooks {
        // Before the ceiling: Herald must not deliver to the ceiling's receiver paths.
        delete_webhooks(api, created).await;
    }
    let ceiling = if cli.skip_ceiling {
        None
    } else {
        eprintln!("raw HTTP ceiling: {} signed posts straight to the receiver…", plan.deliveries());
        let twins: Vec<(usize, Arc<Endpoint>)> = plan
            .endpoints
            .iter()
            .map(|behavior| {
                let n = receiver.add_endpoint(behavior.for_ceiling());
                let endpoint = receiver.endpoint(n).context("the endpoint was just added")?;
                endpoint.set_secret(format!("whsec_bench-ceiling-{}", Uuid::new_v4().simple()));
                Ok((n, endpoint))
            })
            .collect::<anyhow::Result<_>>()?;
        let load = match (plan.load, cli.ceiling_concurrency) {
            (Load::Closed { .. }, Some(concurrency)) => Load::Closed { concurrency },
            (load, _) => load,
        };
        Some(ceiling::run(address, twins, plan.events, load).await?)
    };
    Ok((herald, ceiling))
}

async fn herald_part(
    cli: &Cli,
    plan: &Plan,
    services: cpu::Selection,
    api: &Arc<Api>,
    endpoints: &[Arc<Endpoint>],
) -> Herald {
    let api_port = reqwest::Url::parse(&cli.url).ok().and_then(|url| url.port_or_known_default());
    let (processes, left_out) = procstat::discover(&cli.pids, api_port);
    describe_processes(cli, &processes, &left_out);
    let monitor = Monitor::start(processes);
    let watch = cpu::Watch::start(services);
    let start = Instant::now();
    let ingest = Arc::new(Ingest::default());
    let progress = driver::spawn_progress(ingest.clone(), plan.events, endpoints.to_vec(), plan.deliveries());
    let result = driver::send_events(api.clone(), plan.load, plan.events, ingest).await;
    if result.failed > 0 {
        eprintln!("{} event(s) were not accepted, e.g.:", result.failed);
        result.error_samples.iter().for_each(|e| eprintln!("  {e}"));
    }
    if result.lag.worst > Duration::from_millis(100) {
        eprintln!(
            "warning: the sender fell {} ms behind its schedule ({} sends late by more than {} ms: Herald \
             answered too slowly); the rate was not held",
            result.lag.worst.as_millis(),
            result.lag.late,
            LATE_AFTER.as_millis()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(cli.deadline);
    let complete = driver::wait_for_deliveries(endpoints, &result.ids, deadline).await;
    progress.abort();
    let elapsed = start.elapsed();
    let services = watch.stop();
    let processes = monitor.stop().await;
    let endpoints = endpoints.iter().map(|e| (e.behavior, e.collect(&result.ids))).collect();
    if !complete {
        eprintln!("deadline reached ({} s after the last send): deliveries are missing", cli.deadline);
    }
    Herald { ingest: result, endpoints, processes, services, elapsed }
}

fn describe_processes(cli: &Cli, processes: &[procstat::Proc], left_out: &[procstat::Proc]) {
    if processes.is_empty() {
        eprintln!(
            "warning: no herald or herald-worker process found: CPU and memory are not reported (use --pid)"
        );
        return;
    }
    let list = |procs: &[procstat::Proc]| {
        procs.iter().map(|p| format!("{} {}", p.name, p.pid)).collect::<Vec<_>>().join(", ")
    };
    eprintln!("measuring {}", list(processes));
    if !left_out.is_empty() {
        eprintln!("  (not {}: it does not listen on the API's port; pass --pid to choose)", list(left_out));
    }
    let apis = processes.iter().filter(|p| p.name == "herald").count();
    if cli.pids.is_empty() && apis > 1 {
        eprintln!(
            "warning: {apis} processes are named herald (another instance on this machine?); all are \
             measured: pass --pid to choose"
        );
    }
}

async fn warn_about_existing_webhooks(api: &Api) -> anyhow::Result<()> {
    let existing = api.list_webhooks().await?;
    if existing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "warning: this organization already has {} webhook(s) the bench did not create; they will receive \
         the bench's events too and skew the results. Use an organization of its own: \
         `herald bootstrap --org bench --email bench@example.com` and the key it prints.",
        existing.len()
    );
    let leftovers: Vec<String> = existing
        .iter()
        .filter(|w| w.description.as_deref() == Some(BENCH_DESCRIPTION))
        .map(|w| format!("{} ({})", w.id, w.url))
        .collect();
    if !leftovers.is_empty() {
        eprintln!("  left over by an interrupted herald-bench run (delete them): {}", leftovers.join(", "));
    }
    Ok(())
}

/// Deletes the webhooks this run created (what fails is reported, not fatal).
async fn delete_webhooks(api: &Api, created: &Mutex<Vec<Uuid>>) {
    let ids = std::mem::take(&mut *lock(created));
    for id in ids {
        if let Err(error) = api.delete_webhook(id).await {
            eprintln!("warning: could not delete webhook {id}: {error:#}");
        }
    }
}

fn build_report(
    cli: &Cli,
    plan: &Plan,
    herald: Herald,
    ceiling: Option<Ceiling>,
    started_at: chrono::DateTime<chrono::Utc>,
    elapsed: Duration,
) -> Report {
    let sum = |field: fn(&EndpointResult) -> u64| herald.endpoints.iter().map(|(_, r)| field(r)).sum::<u64>();
    let latencies = |keep: fn(Behavior) -> bool| {
        let mut all: Vec<f64> = herald
            .endpoints
            .iter()
            .filter(|(behavior, _)| keep(*behavior))
            .flat_map(|(_, r)| r.latencies_ms.iter().copied())
            .collect();
        latency(&mut all)
    };
    let delivered = sum(|r| r.delivered);
    let last_arrival = herald.endpoints.iter().filter_map(|(_, r)| r.last_arrival_micros).max();
    let deliveries_per_sec = match last_arrival {
        Some(last) if last > herald.ingest.started_micros => {
            delivered as f64 / ((last - herald.ingest.started_micros) as f64 / 1e6)
        }
        _ => 0.0,
    };
    let noisy = plan.scenario == Scenario::Noisy;
    let ceiling_rate = ceiling.as_ref().map(|c| c.deliveries_per_sec);
    let cpu: Vec<f64> = herald.processes.iter().filter_map(|p| p.cpu_seconds).collect();
    let (concurrency, rate, in_flight) = match plan.load {
        Load::Closed { concurrency } => (Some(concurrency), None, None),
        Load::Open { rate, in_flight } => (None, Some(rate), Some(in_flight)),
    };
    let herald_cpu = (!cpu.is_empty()).then(|| (herald.processes.len(), cpu.iter().sum()));
    let open = rate.is_some();
    let mut report = Report {
        scenario: plan.scenario,
        mode: cli.mode_label.clone(),
        events: plan.events,
        endpoints: plan.endpoints.len(),
        concurrency,
        rate,
        max_in_flight: in_flight,
        late_sends: open.then_some(herald.ingest.lag.late),
        worst_lag_ms: open.then_some(herald.ingest.lag.worst.as_secs_f64() * 1e3),
        accepted: herald.ingest.accepted,
        send_failures: herald.ingest.failed,
        rate_limited: herald.ingest.rate_limited,
        ingest_events_per_sec: herald.ingest.events_per_sec(),
        ingest_latency_ms: latency(&mut herald.ingest.latencies_ms.clone()),
        deliveries_expected: herald.ingest.accepted * plan.endpoints.len() as u64,
        deliveries_delivered: delivered,
        deliveries_per_sec,
        ceiling_deliveries_per_sec: ceiling_rate,
        ceiling_concurrency: ceiling.as_ref().and(concurrency.map(|c| cli.ceiling_concurrency.unwrap_or(c))),
        ceiling_failures: ceiling.as_ref().map(|c| c.failed),
        ratio: ceiling_rate.filter(|c| *c > 0.0).map(|c| deliveries_per_sec / c),
        latency_ms: latencies(|_| true),
        fast_latency_ms: if noisy { latencies(|b| b == Behavior::Fast) } else { None },
        slow_latency_ms: if noisy { latencies(|b| b == Behavior::Slow) } else { None },
        ceiling_latency_ms: ceiling.map(|mut c| latency(&mut c.latencies_ms)).unwrap_or_default(),
        lost: sum(|r| r.lost),
        duplicates: sum(|r| r.duplicates),
        bad_signatures: sum(|r| r.bad_signatures),
        retries: sum(|r| r.retries),
        injected_failures: sum(|r| r.injected_failures),
        malformed: sum(|r| r.malformed),
        unexpected: sum(|r| r.unexpected),
        cpu_seconds_total: (!cpu.is_empty()).then(|| cpu.iter().sum()),
        cpu_per_event: CpuPerEvent::new(herald_cpu, &herald.services, delivered),
        processes: herald.processes,
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        duration_s: elapsed.as_secs_f64(),
        herald_part_s: herald.elapsed.as_secs_f64(),
        passed: false,
    };
    report.passed = report.verdict();
    report
}
