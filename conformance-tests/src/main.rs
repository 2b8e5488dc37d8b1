//! The conformance runner: every scenario against every testee, and every
//! pairable scenario across two testees (producers in one, consumers in the
//! other). Prints the matrix, the requirement coverage and `N passed, N
//! failed, N skipped`; exits non-zero on any failure.

mod addresses;
mod broker;
mod judge;
mod scenario;
mod testee;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;

use broker::Broker;
use scenario::{table_to_json, Role, Scenario};
use testee::{Hello, Reply, Testee, TesteeList, TesteeSpec};

/// Extra time a testee gets for an operation beyond the operation's own
/// `timeout_ms`.
const OP_GRACE: Duration = Duration::from_secs(15);

struct Options {
    broker: PathBuf,
    dir: PathBuf,
    spec: PathBuf,
    only: Option<String>,
    testee: Option<String>,
    pairs: bool,
    /// Every broker speaks TLS and every testee connects over it.
    tls: bool,
    /// Runs at once (each has its own broker, data dir and testees).
    jobs: usize,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        broker: PathBuf::from("target/debug/blipmq"),
        dir: PathBuf::from("conformance-tests"),
        spec: PathBuf::from("schema/SPEC.md"),
        only: None,
        testee: None,
        pairs: true,
        tls: false,
        jobs: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--broker" => options.broker = value("--broker")?.into(),
            "--dir" => options.dir = value("--dir")?.into(),
            "--spec" => options.spec = value("--spec")?.into(),
            "--only" => options.only = Some(value("--only")?),
            "--testee" => options.testee = Some(value("--testee")?),
            "--no-pairs" => options.pairs = false,
            "--tls" => options.tls = true,
            "--jobs" => {
                let jobs = value("--jobs")?;
                options.jobs = jobs
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("--jobs {jobs:?}: expected a number above 0"))?;
            }
            "-h" | "--help" => {
                println!(
                    "usage: conformance [--broker PATH] [--dir conformance-tests] [--spec schema/SPEC.md]\n                   [--only SCENARIO-SUBSTRING] [--testee NAME[,NAME...]] [--no-pairs] [--tls]\n                   [--jobs N]\n\n--jobs N: run N scenarios at once (default 1; most of a run is waiting on\ntimers, so 2 nearly halves it on two cores). Output stays in run order.\n--tls: every broker speaks TLS (a PKI made for the run); testees get tls://\nand wss:// addresses and `tls_ca`, and need the capability tls. Scenarios\nthat speak raw frames (connect_raw) are skipped in this mode."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(options)
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
    /// Failed, as its expected-failures entry says.
    ExpectedFail(String),
}

struct Run<'a> {
    scenario: &'a Scenario,
    producer: &'a TesteeSpec,
    consumer: &'a TesteeSpec,
}

impl Run<'_> {
    fn column(&self) -> String {
        if self.producer.name == self.consumer.name {
            self.producer.name.clone()
        } else {
            format!("{}→{}", self.producer.name, self.consumer.name)
        }
    }

    /// The expected-failures key: `(testee, scenario id)` for a single
    /// testee, `("pairs", "id@producer→consumer")` for a pair.
    fn key(&self) -> (String, String) {
        if self.producer.name == self.consumer.name {
            (self.producer.name.clone(), self.scenario.id.clone())
        } else {
            (
                "pairs".to_string(),
                format!("{}@{}", self.scenario.id, self.column()),
            )
        }
    }
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("conformance: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("conformance: {e}");
            println!("0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options) -> Result<bool, String> {
    let list_path = options.dir.join("testees.toml");
    let list: TesteeList = toml::from_str(
        &std::fs::read_to_string(&list_path)
            .map_err(|e| format!("{}: {e}", list_path.display()))?,
    )
    .map_err(|e| format!("{}: {e}", list_path.display()))?;
    let testees: Vec<TesteeSpec> = list
        .testee
        .into_iter()
        .filter(|t| {
            let mut only = options.testee.iter().flat_map(|list| list.split(','));
            options.testee.is_none() || only.any(|name| name == t.name)
        })
        .collect();
    let mut scenarios = Scenario::load_dir(&options.dir.join("scenarios"))?;
    // One PKI for the whole run; its files live until the run ends.
    let pki = options.tls.then(blipmq_testkit::TestPki::generate);
    if let Some(only) = &options.only {
        scenarios.retain(|s| s.id.contains(only.as_str()));
    }
    let requirements = spec_requirements(&options.spec)?;
    // Beside SPEC.md: the class every SDK raises for each code.
    let error_table = judge::ErrorTable::load(&options.spec.with_file_name("error-classes.json"))?;
    for scenario in &scenarios {
        if let Some(unknown) = scenario
            .covers
            .iter()
            .find(|id| !requirements.contains(*id))
        {
            return Err(format!(
                "scenario {} cites {unknown}, which schema/SPEC.md does not define",
                scenario.id
            ));
        }
    }

    // Ask each testee who it is and what it can do.
    let mut hellos: HashMap<String, Result<Hello, String>> = HashMap::new();
    for spec in &testees {
        let hello = Testee::spawn(spec).and_then(|mut t| t.hello());
        match &hello {
            Ok(h) => println!(
                "testee {:<18} sdk {} {} capabilities {:?}",
                spec.name, h.sdk, h.version, h.capabilities
            ),
            Err(e) => println!("testee {:<18} BROKEN: {e}", spec.name),
        }
        hellos.insert(spec.name.clone(), hello);
    }
    let expected = load_expected_failures(&options.dir.join("expected-failures"))?;

    let mut runs = Vec::new();
    for scenario in &scenarios {
        for t in &testees {
            runs.push(Run {
                scenario,
                producer: t,
                consumer: t,
            });
        }
    }
    if options.pairs {
        for scenario in scenarios.iter().filter(|s| s.pairable()) {
            for p in &testees {
                for c in testees.iter().filter(|c| c.name != p.name) {
                    runs.push(Run {
                        scenario,
                        producer: p,
                        consumer: c,
                    });
                }
            }
        }
    }

    let mut results: Vec<(String, String, Outcome)> = Vec::new();
    let mut used_expectations = BTreeSet::new();
    let mut judge = |n: usize, mut outcome: Outcome, elapsed: Duration| {
        let run = &runs[n];
        let key = run.key();
        if let Some(reason) = expected.get(&key) {
            used_expectations.insert(key.clone());
            outcome = match outcome {
                Outcome::Fail(why) => Outcome::ExpectedFail(format!("{why} [expected: {reason}]")),
                Outcome::Pass => Outcome::Fail(format!(
                    "listed in expected-failures ({reason}) but passed: remove the entry"
                )),
                other => other,
            };
        }
        let label = match &outcome {
            Outcome::Pass => "PASS".to_string(),
            Outcome::Fail(why) => format!("FAIL  {why}"),
            Outcome::Skip(why) => format!("SKIP  {why}"),
            Outcome::ExpectedFail(why) => format!("XFAIL {why}"),
        };
        println!(
            "{:<44} {:<34} {:>6} ms  {label}",
            run.scenario.id,
            run.column(),
            elapsed.as_millis()
        );
        results.push((run.scenario.id.clone(), run.column(), outcome));
    };
    // `jobs` workers take runs in order; their outcomes are judged and
    // printed in run order, whatever order they finish in.
    let next_run = std::sync::atomic::AtomicUsize::new(0);
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.min(runs.len()) {
            let done = done.clone();
            let (next_run, runs, hellos, error_table) = (&next_run, &runs, &hellos, &error_table);
            let pki = pki.as_ref();
            scope.spawn(move || loop {
                let n = next_run.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(run) = runs.get(n) else { break };
                let started = Instant::now();
                let outcome = execute(run, hellos, &options.broker, error_table, n, pki);
                if done.send((n, outcome, started.elapsed())).is_err() {
                    break;
                }
            });
        }
        drop(done);
        let mut waiting = BTreeMap::new();
        let mut next_to_judge = 0;
        for (n, outcome, elapsed) in finished {
            waiting.insert(n, (outcome, elapsed));
            while let Some((outcome, elapsed)) = waiting.remove(&next_to_judge) {
                judge(next_to_judge, outcome, elapsed);
                next_to_judge += 1;
            }
        }
    });
    let mut stale = Vec::new();
    for key in expected.keys() {
        let complete_run = options.only.is_none()
            && options.testee.is_none()
            && (options.pairs || key.0 != "pairs");
        if !used_expectations.contains(key) && complete_run {
            stale.push(key.clone());
        }
    }

    print_matrix(&results);
    let failures: Vec<_> = results
        .iter()
        .filter(|(_, _, o)| matches!(o, Outcome::Fail(_)))
        .collect();
    if !failures.is_empty() {
        println!();
        println!("failures:");
        for (id, column, outcome) in failures {
            let description = scenarios
                .iter()
                .find(|s| &s.id == id)
                .map_or("", |s| s.description.as_str());
            if let Outcome::Fail(why) = outcome {
                println!("  {id} [{column}] — {description}\n    {why}");
            }
        }
    }
    let covered: BTreeSet<&String> = scenarios.iter().flat_map(|s| s.covers.iter()).collect();
    let uncovered: Vec<&String> = requirements
        .iter()
        .filter(|id| !covered.contains(id))
        .collect();
    println!();
    println!(
        "requirement coverage: {}/{} ids of schema/SPEC.md",
        requirements.len() - uncovered.len(),
        requirements.len()
    );
    if !uncovered.is_empty() {
        println!(
            "not covered: {}",
            uncovered
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let passed = results
        .iter()
        .filter(|(_, _, o)| matches!(o, Outcome::Pass | Outcome::ExpectedFail(_)))
        .count();
    let mut failed = results
        .iter()
        .filter(|(_, _, o)| matches!(o, Outcome::Fail(_)))
        .count();
    for (file, key) in &stale {
        println!("FAIL  expected-failures/{file}.txt entry {key:?} matches no run: remove it");
        failed += 1;
    }
    let skipped = results
        .iter()
        .filter(|(_, _, o)| matches!(o, Outcome::Skip(_)))
        .count();
    println!();
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    Ok(failed == 0)
}

/// Play one scenario with one producer testee and one consumer testee.
fn execute(
    run: &Run<'_>,
    hellos: &HashMap<String, Result<Hello, String>>,
    broker_bin: &Path,
    error_table: &judge::ErrorTable,
    n: usize,
    pki: Option<&blipmq_testkit::TestPki>,
) -> Outcome {
    if pki.is_some() && run.scenario.steps.iter().any(|s| s.op == "connect_raw") {
        return Outcome::Skip("speaks raw frames: not run over TLS".into());
    }
    for spec in [run.producer, run.consumer] {
        match &hellos[&spec.name] {
            Err(e) => return Outcome::Fail(format!("testee {} is broken: {e}", spec.name)),
            Ok(hello) => {
                if pki.is_some() && !hello.capabilities.iter().any(|c| c == "tls") {
                    return Outcome::Skip(format!("{} lacks capability tls", spec.name));
                }
                if let Some(missing) = run
                    .scenario
                    .needs
                    .iter()
                    .find(|c| !hello.capabilities.contains(c))
                {
                    return Outcome::Skip(format!("{} lacks capability {missing}", spec.name));
                }
            }
        }
    }
    let data_dir =
        std::env::temp_dir().join(format!("blipmq-conformance-{}-{n}", std::process::id()));
    let mut env = run.scenario.broker_env();
    if let Some(text) = &run.scenario.broker_file {
        let file = data_dir.join("blipmq.toml");
        let written = std::fs::create_dir_all(&data_dir).and_then(|()| std::fs::write(&file, text));
        if let Err(e) = written {
            return Outcome::Fail(format!("{}: {e}", file.display()));
        }
        env.push(("BLIPMQ_CONFIG".into(), file.display().to_string()));
    }
    if let Some(pki) = pki {
        use blipmq_testkit::files;
        let path = |name| pki.path(name).display().to_string();
        env.push(("BLIPMQ_TLS_CERT_FILE".into(), path(files::BROKER_CERT)));
        env.push(("BLIPMQ_TLS_KEY_FILE".into(), path(files::BROKER_KEY)));
        // The runner reads /metrics over plain HTTP.
        env.push(("BLIPMQ_METRICS_TLS".into(), "false".into()));
    }
    let mut broker = match Broker::start(broker_bin, env, data_dir) {
        Ok(b) => b,
        Err(e) => return Outcome::Fail(e),
    };
    // For `connect` steps whose address list names a dead address.
    let dead_port = match addresses::dead_port() {
        Ok(port) => port,
        Err(e) => return Outcome::Fail(format!("no free port for a dead address: {e}")),
    };
    let mut processes: BTreeMap<String, Testee> = BTreeMap::new();
    let mut saved: HashMap<String, Value> = HashMap::new();
    for spec in [run.producer, run.consumer] {
        if !processes.contains_key(&spec.name) {
            match Testee::spawn(spec).and_then(|mut t| t.hello().map(|_| t)) {
                Ok(t) => {
                    processes.insert(spec.name.clone(), t);
                }
                Err(e) => return Outcome::Fail(e),
            }
        }
    }
    for (i, step) in run.scenario.steps.iter().enumerate() {
        let at = format!("step {} ({} {})", i + 1, step.actor, step.op);
        if step.actor == "runner" {
            if let Err(e) = runner_op(&mut broker, step) {
                return Outcome::Fail(format!("{at}: {e}"));
            }
            continue;
        }
        let testee_name = match run.scenario.actors[&step.actor] {
            Role::Producer => &run.producer.name,
            Role::Consumer => &run.consumer.name,
        };
        let testee = processes.get_mut(testee_name).expect("spawned above");
        for iteration in 0..step.repeat.unwrap_or(1) {
            let mut args = match table_to_json(&step.args_for(iteration)) {
                Ok(a) => a,
                Err(e) => return Outcome::Fail(format!("{at}: bad scenario args: {e}")),
            };
            if (step.op == "connect" || step.op == "connect_raw") && args.get("addr").is_none() {
                args["addr"] = Value::String(broker.addr.clone());
                // The same broker over WebSocket, for SDKs that cannot open TCP.
                if step.op == "connect" {
                    args["websocket_addr"] =
                        Value::String(format!("ws://{}", broker.websocket_addr));
                }
                if let Some(pki) = pki {
                    // By name: the certificate is for localhost.
                    let port =
                        |addr: &str| addr.rsplit_once(':').map_or("", |(_, p)| p).to_string();
                    args["addr"] = Value::String(format!("tls://localhost:{}", port(&broker.addr)));
                    args["websocket_addr"] =
                        Value::String(format!("wss://localhost:{}", port(&broker.websocket_addr)));
                    let ca = pki.path(blipmq_testkit::files::CA);
                    args["tls_ca"] = Value::String(ca.display().to_string());
                }
            }
            if step.op == "connect" {
                if let Err(e) = addresses::expand(&mut args, &broker, pki.is_some(), dead_port) {
                    return Outcome::Fail(format!("{at}: {e}"));
                }
            }
            if let Err(e) = resolve_saved(&mut args, &saved) {
                return Outcome::Fail(format!("{at}: {e}"));
            }
            let timeout =
                OP_GRACE + Duration::from_millis(args["timeout_ms"].as_u64().unwrap_or(0));
            let reply = match testee.request(Some(&step.actor), &step.op, args, timeout) {
                Ok(reply) => reply,
                // A crashed or hung testee fails this scenario only; the next
                // scenario gets a fresh process.
                Err(e) => return Outcome::Fail(format!("{at}: {e}{}", testee.stderr_tail())),
            };
            if let Reply::Skipped(why) = &reply {
                return Outcome::Skip(format!("{testee_name} skipped {at}: {why}"));
            }
            let naming = testee.error_class.as_deref().map(|p| (error_table, p));
            if let Err(e) = judge::judge(step.expect.as_ref(), &reply, naming) {
                return Outcome::Fail(format!("{at} #{iteration} on {testee_name}: {e}"));
            }
            if let (Some(name), Reply::Ok(result)) = (&step.save, &reply) {
                saved.insert(name.clone(), result.clone());
            }
        }
    }
    Outcome::Pass
}

/// Replace string arguments `"@name:/pointer"` with that part of a result
/// an earlier step saved (e.g. a delivery id to ack).
fn resolve_saved(args: &mut Value, saved: &HashMap<String, Value>) -> Result<(), String> {
    match args {
        Value::String(text) if text.starts_with('@') => {
            let (name, pointer) = text[1..]
                .split_once(':')
                .ok_or_else(|| format!("{text:?}: expected @name:/pointer"))?;
            let value = saved
                .get(name)
                .ok_or_else(|| format!("{text:?}: nothing saved as {name:?}"))?
                .pointer(pointer)
                .ok_or_else(|| format!("{text:?}: no {pointer} in the saved result"))?;
            *args = value.clone();
            Ok(())
        }
        Value::Array(items) => items.iter_mut().try_for_each(|v| resolve_saved(v, saved)),
        Value::Object(map) => map.values_mut().try_for_each(|v| resolve_saved(v, saved)),
        _ => Ok(()),
    }
}

/// Steps the runner performs itself.
fn runner_op(broker: &mut Broker, step: &scenario::Step) -> Result<(), String> {
    let int = |key: &str| step.args.get(key).and_then(|v| v.as_integer());
    match step.op.as_str() {
        "wait" => {
            std::thread::sleep(Duration::from_millis(int("ms").unwrap_or(0).max(0) as u64));
            Ok(())
        }
        "restart_broker" => broker.restart(),
        "kill_broker" => broker.kill_and_restart(),
        "metric" => {
            let sample = step
                .args
                .get("sample")
                .and_then(|v| v.as_str())
                .ok_or("metric needs a sample")?;
            let equals = step.args.get("equals").and_then(|v| v.as_integer());
            let at_least = step.args.get("at_least").and_then(|v| v.as_integer());
            // Counters settle asynchronously; poll until they match.
            let deadline =
                Instant::now() + Duration::from_millis(int("timeout_ms").unwrap_or(5000) as u64);
            loop {
                let value = broker.metric(sample)?;
                let good = equals.is_none_or(|e| value == e as f64)
                    && at_least.is_none_or(|a| value >= a as f64);
                if good {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "{sample} is {value}, expected equals={equals:?} at_least={at_least:?}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        other => Err(format!("unknown runner op {other:?}")),
    }
}

/// Every requirement id (`**PUB-3**`) defined in SPEC.md.
fn spec_requirements(path: &Path) -> Result<BTreeSet<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut ids = BTreeSet::new();
    for piece in text.split("**").skip(1).step_by(2) {
        let is_id = piece.split_once('-').is_some_and(|(name, num)| {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_uppercase())
                && !num.is_empty()
                && num.chars().all(|c| c.is_ascii_digit())
        });
        if is_id {
            ids.insert(piece.to_string());
        }
    }
    Ok(ids)
}

/// `expected-failures/<testee>.txt` (scenario ids) and `pairs.txt`
/// (`id@producer→consumer`): one entry per line, then `# reason`.
fn load_expected_failures(dir: &Path) -> Result<BTreeMap<(String, String), String>, String> {
    let mut expected = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(expected);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "txt") {
            continue;
        }
        let file = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for line in text.lines() {
            let (key, reason) = line.split_once('#').unwrap_or((line, ""));
            let key = key.trim();
            if !key.is_empty() {
                expected.insert((file.clone(), key.to_string()), reason.trim().to_string());
            }
        }
    }
    Ok(expected)
}

fn print_matrix(results: &[(String, String, Outcome)]) {
    let mut columns: Vec<&String> = Vec::new();
    let mut rows: Vec<&String> = Vec::new();
    let mut cells: HashMap<(&String, &String), &Outcome> = HashMap::new();
    for (scenario, column, outcome) in results {
        if !columns.contains(&column) {
            columns.push(column);
        }
        if !rows.contains(&scenario) {
            rows.push(scenario);
        }
        cells.insert((scenario, column), outcome);
    }
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(8).max(8);
    println!();
    print!("{:<width$}", "scenario");
    for c in &columns {
        print!(" | {c}");
    }
    println!();
    for row in rows {
        print!("{row:<width$}");
        for c in &columns {
            let mark = match cells.get(&(row, *c)) {
                Some(Outcome::Pass) => "pass",
                Some(Outcome::Fail(_)) => "FAIL",
                Some(Outcome::Skip(_)) => "skip",
                Some(Outcome::ExpectedFail(_)) => "xfail",
                None => "-",
            };
            print!(" | {mark:<w$}", w = c.chars().count());
        }
        println!();
    }
}
