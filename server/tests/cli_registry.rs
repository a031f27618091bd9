//! The registry's command line end to end, through a real `commentary serve` on port 0 and the
//! real binary: `run create|watch|list|cancel`, `login`/`logout` and the token precedence,
//! `pull --id` and the "best" rule, completions and the possible values in `--help`.
//! Every command runs with `XDG_CONFIG_HOME` in a temporary folder and without
//! `COMMENTARY_TOKEN`/`COMMENTARY_SERVER`, so nothing of the machine's own login leaks in.

mod common;

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, Registry, commentary};
use schema::api::{RunInfo, RunState};
use tempfile::TempDir;
use tests::{MNIST_FIXTURE_DIGEST, mnist_fixture};

/// What a command printed and how it ended.
struct Ran {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn ok(self) -> Self {
        assert!(
            self.success,
            "the command failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    fn failed(self) -> Self {
        assert!(
            !self.success,
            "the command succeeded:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().map(str::trim).collect()
    }
}

/// `commentary` with a private config folder and no token or server from the environment.
fn cli(config_home: &Path) -> Command {
    let mut command = commentary();
    command
        .env("XDG_CONFIG_HOME", config_home)
        .env_remove("COMMENTARY_TOKEN")
        .env_remove("COMMENTARY_SERVER");
    command
}

/// Runs `command` with `stdin` to its end, killing it after `limit`.
fn run_within(mut command: Command, stdin: &str, limit: Duration) -> Ran {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start commentary");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the command ran longer than {limit:?}; stderr: {}",
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ran {
        success: status.success(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn run(command: Command) -> Ran {
    run_within(command, "", Duration::from_secs(600))
}

/// `commentary dataset push` of the fixture; returns the digest.
fn push_fixture(config_home: &Path, registry: &Registry) -> String {
    let mut push = cli(config_home);
    push.args(["dataset", "push", "--server", &registry.url])
        .arg(mnist_fixture());
    let digest = run(push).ok().stdout.trim().to_string();
    assert_eq!(digest, MNIST_FIXTURE_DIGEST);
    digest
}

/// Flags of a small, fast run (MLP student and teacher on the fixture), after the shared
/// learning flags.
const FAST: &[&str] = &[
    "--kind",
    "example-weighting",
    "--algorithm",
    "bptt",
    "--validation-examples",
    "500",
];

/// `commentary run create` of a fast run with `extra` flags.
fn run_create(config_home: &Path, registry: &Registry, digest: &str, extra: &[&str]) -> Command {
    let mut create = cli(config_home);
    create
        .args([
            "run",
            "create",
            "--server",
            &registry.url,
            "--dataset",
            digest,
        ])
        .args(FAST)
        .args(tests::FAST_LEARN_FLAGS)
        .args(extra);
    create
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_created_with_flags_is_watched_to_success_and_listed() {
    let config = TempDir::new().expect("tmp");
    let registry = Registry::start(&Backend::sqlite_local(), &["--workers", "1"]);
    let client = registry.client();
    let digest = push_fixture(config.path(), &registry);
    // The config file sets two fields; a flag overrides one of them.
    let file = config.path().join("learn.toml");
    std::fs::write(&file, "meta_steps = 5\nbatch_size = 24\n").expect("config");
    let mut create = run_create(
        config.path(),
        &registry,
        &digest,
        &["--meta-steps", "2", "--seed", "7"],
    );
    create.arg("--config").arg(&file).args([
        "--seeds",
        "1",
        "--steps",
        "60",
        "--eval-every",
        "20",
        "--eval-batch-size",
        "32",
    ]);
    let created = run(create).ok();
    let id = created.stdout.trim().to_string();
    let queued: RunInfo = client.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(queued.config.meta_steps, 2, "the flag overrides the file");
    assert_eq!(queued.config.batch_size, 24, "the file's value stands");
    assert_eq!(queued.config.seed, 7);
    assert_eq!(queued.config.inner_steps, 10);
    assert_eq!(queued.evaluation.seeds, [1]);
    assert_eq!(queued.evaluation.steps, 60);
    assert_eq!(queued.evaluation.batch_size, 32);

    let mut watch = cli(config.path());
    watch.args(["run", "watch", &id, "--server", &registry.url]);
    let watched = run(watch).ok();
    let done: RunInfo = client.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(done.state, RunState::Succeeded);
    let commentary_id = done.commentary_id.expect("a commentary");
    assert_eq!(watched.lines(), [commentary_id.as_str()]);
    assert!(
        watched.stderr.contains("succeeded"),
        "watch says how the run ended: {}",
        watched.stderr
    );

    let list = |extra: &[&str]| {
        let mut list = cli(config.path());
        list.args(["run", "list", "--server", &registry.url])
            .args(extra);
        run(list).ok().stdout
    };
    let table = list(&[]);
    let row = table
        .lines()
        .find(|line| line.starts_with(&id))
        .unwrap_or_else(|| panic!("the run is listed: {table}"));
    assert!(
        row.contains("succeeded") && row.contains("example-weighting"),
        "{row}"
    );
    assert!(
        table.lines().next().is_some_and(|h| h.starts_with("id")),
        "{table}"
    );
    assert!(list(&["--dataset", &digest]).contains(&id));
    assert!(!list(&["--state", "queued"]).contains(&id));
    let json: Vec<RunInfo> =
        serde_json::from_str(&list(&["--state", "succeeded", "--json"])).expect("RunInfo JSON");
    assert_eq!(
        json.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [id.as_str()]
    );

    // --watch on create follows the run the same way: the run id, then the commentary id.
    let mut create = run_create(
        config.path(),
        &registry,
        &digest,
        &["--meta-steps", "1", "--no-evaluation", "--watch"],
    );
    create.env("COMMENTARY_SERVER", "http://127.0.0.1:9");
    let both = run(create).ok();
    let lines = both.lines();
    assert_eq!(lines.len(), 2, "{}", both.stdout);
    let second: RunInfo = client.get(&format!("/v1/runs/{}", lines[0])).await;
    assert_eq!(second.commentary_id.as_deref(), Some(lines[1]));
    assert!(second.evaluation.seeds.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_run_reads_cancelled_and_watch_exits_non_zero() {
    let config = TempDir::new().expect("tmp");
    // No workers: the run stays queued until it is cancelled.
    let registry = Registry::start(&Backend::sqlite_local(), &["--workers", "0"]);
    let client = registry.client();
    client.upload_fixture().await;
    let created = run(run_create(
        config.path(),
        &registry,
        MNIST_FIXTURE_DIGEST,
        &["--meta-steps", "3"],
    ))
    .ok();
    let id = created.stdout.trim().to_string();

    let mut cancel = cli(config.path());
    cancel.args(["run", "cancel", &id, "--server", &registry.url]);
    let cancelled = run(cancel).ok();
    assert_eq!(cancelled.stdout.trim(), format!("{id} cancelled"));
    let info: RunInfo = client.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(info.state, RunState::Cancelled);

    let mut watch = cli(config.path());
    watch.args(["run", "watch", &id, "--server", &registry.url]);
    let watched = run_within(watch, "", Duration::from_secs(60)).failed();
    assert!(
        watched.stderr.contains(&format!("run {id} was cancelled")),
        "{}",
        watched.stderr
    );
    assert!(
        watched.stdout.trim().is_empty(),
        "no commentary id: {}",
        watched.stdout
    );

    // Cancelling an ended run is refused with the registry's reason.
    let mut again = cli(config.path());
    again.args(["run", "cancel", &id, "--server", &registry.url]);
    let again = run(again).failed();
    assert!(again.stderr.contains("409"), "{}", again.stderr);
    // An id that is not one never reaches another URL.
    let mut bad = cli(config.path());
    bad.args(["run", "watch", "../datasets", "--server", &registry.url]);
    assert!(run(bad).failed().stderr.contains("is not a run id"));
}

#[tokio::test(flavor = "multi_thread")]
async fn login_stores_a_private_token_that_later_commands_use_unless_overridden() {
    let config = TempDir::new().expect("tmp");
    let registry = Registry::start(
        &Backend::sqlite_local(),
        &["--workers", "0", "--require-token"],
    );
    let token = registry.create_token("write");
    let file = config.path().join("commentary").join("credentials");
    std::fs::create_dir_all(file.parent().expect("folder")).expect("mkdir");
    std::fs::write(
        &file,
        "[servers.\"http://other.example:1\"]\ntoken = \"cmt_other\"\n",
    )
    .expect("another server's entry");

    // A token the registry does not know is refused and not stored.
    let mut bogus = cli(config.path());
    bogus.args(["login", "--server", &registry.url, "--token", "cmt_bogus"]);
    let refused = run(bogus).failed();
    assert!(
        refused.stderr.contains("unknown or revoked token"),
        "{}",
        refused.stderr
    );
    assert!(
        !std::fs::read_to_string(&file)
            .expect("file")
            .contains("cmt_bogus")
    );

    // From stdin, with the URL's trailing slash: checked, then stored under the bare URL.
    let mut login = cli(config.path());
    login.args(["login", "--server", &format!("{}/", registry.url)]);
    run_within(login, &format!("{token}\n"), Duration::from_secs(60)).ok();
    let text = std::fs::read_to_string(&file).expect("credentials");
    assert!(
        text.contains(&format!(
            "[servers.\"{}\"]\ntoken = \"{token}\"\n",
            registry.url
        )),
        "{text}"
    );
    let parsed: toml::Table = text.parse().expect("TOML");
    assert_eq!(
        parsed["servers"][registry.url.as_str()]["token"].as_str(),
        Some(token.as_str())
    );
    assert_eq!(
        parsed["servers"]["http://other.example:1"]["token"].as_str(),
        Some("cmt_other"),
        "other servers' entries are kept"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(file.parent().expect("folder"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers, ["credentials"], "no temporary file left");
    }

    // Writes now use the stored token.
    let digest = push_fixture(config.path(), &registry);
    let created = run(run_create(
        config.path(),
        &registry,
        &digest,
        &["--meta-steps", "1"],
    ))
    .ok();
    let id = created.stdout.trim().to_string();

    // --token beats the file; COMMENTARY_TOKEN beats the file; --token beats COMMENTARY_TOKEN.
    let with = |token_flag: Option<&str>, env: Option<&str>| {
        let mut cancel = run_create(config.path(), &registry, &digest, &["--meta-steps", "1"]);
        if let Some(flag) = token_flag {
            cancel.args(["--token", flag]);
        }
        if let Some(env) = env {
            cancel.env("COMMENTARY_TOKEN", env);
        }
        run(cancel)
    };
    let flag = with(Some("cmt_bogus"), None).failed();
    assert!(flag.stderr.contains("401"), "{}", flag.stderr);
    let env = with(None, Some("cmt_bogus")).failed();
    assert!(env.stderr.contains("401"), "{}", env.stderr);
    with(Some(&token), Some("cmt_bogus")).ok();

    let mut cancel = cli(config.path());
    cancel.args(["run", "cancel", &id, "--server", &registry.url]);
    run(cancel).ok();

    // After logout, writes are anonymous again: refused by this registry.
    let mut logout = cli(config.path());
    logout.args(["logout", "--server", &registry.url]);
    run(logout).ok();
    let parsed: toml::Table = std::fs::read_to_string(&file)
        .expect("credentials")
        .parse()
        .expect("TOML");
    assert!(parsed["servers"].get(registry.url.as_str()).is_none());
    assert!(parsed["servers"].get("http://other.example:1").is_some());
    let anonymous = with(None, None).failed();
    assert!(anonymous.stderr.contains("401"), "{}", anonymous.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_takes_an_id_or_the_largest_improvement_and_refuses_when_none_improved() {
    let config = TempDir::new().expect("tmp");
    let tmp = TempDir::new().expect("tmp");
    let registry = Registry::start(&Backend::sqlite_local(), &["--workers", "1"]);
    let client = registry.client();
    let digest = push_fixture(config.path(), &registry);
    // A commentary without an evaluation: it has no improvement.
    let created = run(run_create(
        config.path(),
        &registry,
        &digest,
        &["--meta-steps", "1", "--no-evaluation", "--watch"],
    ))
    .ok();
    let unmeasured = created.lines()[1].to_string();

    let pull = |extra: &[&str], out: &Path| {
        let mut pull = cli(config.path());
        pull.args(["pull", "--server", &registry.url])
            .args(extra)
            .arg("--out")
            .arg(out);
        run(pull)
    };
    let refused = pull(
        &["--dataset", &digest, "--kind", "example-weighting"],
        &tmp.path().join("none"),
    )
    .failed();
    assert!(
        refused.stderr.contains(&digest)
            && refused.stderr.contains("example-weighting")
            && refused.stderr.contains("--allow-no-improvement"),
        "the error names the dataset and kind: {}",
        refused.stderr
    );
    // apply --server follows the same rule (and fails before training anything).
    let mut apply = cli(config.path());
    apply
        .args(["apply", "--server", &registry.url, "--dataset"])
        .arg(mnist_fixture())
        .arg("--report")
        .arg(tmp.path().join("report.json"));
    let apply = run(apply).failed();
    assert!(apply.stderr.contains("improved"), "{}", apply.stderr);

    let first = tmp.path().join("first");
    let allowed = pull(&["--dataset", &digest, "--allow-no-improvement"], &first).ok();
    assert!(allowed.stdout.contains(&unmeasured), "{}", allowed.stdout);
    schema::artifact::verify_artifact(&first).expect("the pulled artifact verifies");

    let by_id = tmp.path().join("by-id");
    let exact = pull(&["--id", &unmeasured], &by_id).ok();
    assert!(exact.stdout.contains(&unmeasured), "{}", exact.stdout);
    let verified = schema::artifact::verify_artifact(&by_id).expect("verifies");
    assert_eq!(verified.manifest.dataset.digest.to_string(), digest);
    let missing = pull(
        &["--id", "00000000-0000-7000-8000-000000000000"],
        &tmp.path().join("missing"),
    )
    .failed();
    assert!(missing.stderr.contains("404"), "{}", missing.stderr);

    // Uploaded claims: the largest improvement that is not marked harmful is the best.
    let mut claims = Vec::new();
    for (gain, harmful) in [(0.1, false), (0.3, false), (0.5, true), (-0.2, false)] {
        claims.push(upload_claim(&client, &first, &digest, gain, harmful).await);
    }
    let best = tmp.path().join("best");
    let pulled = pull(&["--dataset", &digest], &best).ok();
    assert!(
        pulled.stdout.contains(&claims[1]) && pulled.stdout.contains("+0.3000"),
        "{}",
        pulled.stdout
    );
    let other_kind = pull(
        &["--dataset", &digest, "--kind", "label-blending"],
        &tmp.path().join("blend"),
    )
    .failed();
    assert!(
        other_kind
            .stderr
            .contains("no label-blending commentary for dataset"),
        "{}",
        other_kind.stderr
    );
}

/// `POST /v1/commentaries` of the artifact in `dir` with a report claiming `gain`; its id.
async fn upload_claim(
    client: &common::Client,
    dir: &Path,
    digest: &str,
    gain: f64,
    harmful: bool,
) -> String {
    let arm = |mean: f64| {
        serde_json::json!({
            "runs": [],
            "test_accuracy": {"mean": mean, "std": 0.01},
            "final_val_accuracy": {"mean": mean, "std": 0.01},
        })
    };
    let report = serde_json::json!({
        "kind": "example-weighting",
        "dataset": digest,
        "student": "mlp:32",
        "steps": 60,
        "eval_every": 20,
        "batch_size": 64,
        "baseline": arm(0.5),
        "with_commentary": arm(0.5 + gain),
        "steps_to_baseline_accuracy": [],
        "test_accuracy_gain": gain,
        "gain_z": if harmful { -5.0 } else { 5.0 },
        "harmful": harmful,
        "forced": false,
        "wall_s": 1.0,
    });
    let response = client
        .upload_commentary(dir, serde_json::to_vec(&report).expect("JSON"))
        .await;
    let status = response.status();
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(status, 201, "{body:#}");
    assert_eq!(body["improvement"], gain);
    body["id"].as_str().expect("id").to_string()
}

#[test]
fn completions_print_a_script_for_each_shell() {
    let config = TempDir::new().expect("tmp");
    let bash = {
        let mut bash = cli(config.path());
        bash.args(["completions", "bash"]);
        run(bash).ok().stdout
    };
    assert!(bash.contains("commentary"), "{bash}");
    assert!(bash.contains("complete -F"), "a bash completion: {bash}");
    // Possible values reach completions too.
    assert!(bash.contains("example-weighting"), "{bash}");
    for shell in ["zsh", "fish"] {
        let mut command = cli(config.path());
        command.args(["completions", shell]);
        let script = run(command).ok().stdout;
        assert!(script.contains("commentary"), "{shell}: {script}");
    }
}

#[test]
fn help_lists_possible_values_and_examples() {
    let config = TempDir::new().expect("tmp");
    let help = |args: &[&str]| {
        let mut command = cli(config.path());
        command.args(args).arg("--help");
        run(command).ok().stdout
    };
    let learn = help(&["learn"]);
    for value in [
        "example-weighting",
        "label-blending",
        "attention-mask",
        "truncated-bptt",
        "sgd",
        "wgpu",
    ] {
        assert!(learn.contains(value), "learn --help lists {value}: {learn}");
    }
    assert!(learn.contains("Examples:"), "{learn}");
    for command in [
        &["serve"][..],
        &["apply"],
        &["pull"],
        &["dataset", "push"],
        &["run", "create"],
        &["worker"],
    ] {
        let text = help(command);
        assert!(
            text.contains("Examples:\n  commentary "),
            "{command:?} --help has examples: {text}"
        );
    }
    let create = help(&["run", "create"]);
    for flag in [
        "--meta-steps",
        "--config",
        "--eval-batch-size",
        "--seeds",
        "--watch",
    ] {
        assert!(create.contains(flag), "run create takes {flag}: {create}");
    }

    // An unknown value is refused by name, with the expected ones.
    let mut bad = cli(config.path());
    bad.args([
        "learn",
        "--kind",
        "weighting",
        "--dataset",
        "d",
        "--out",
        "o",
    ]);
    let bad = run(bad).failed();
    assert!(
        bad.stderr
            .contains("invalid value 'weighting' for '--kind <KIND>'")
            && bad
                .stderr
                .contains("example-weighting, label-blending, attention-mask"),
        "{}",
        bad.stderr
    );
}
