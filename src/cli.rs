//! The command line (SPEC §4): clap definitions, dispatch, and turning every error
//! into one stderr line and a sysexits code. No command logic lives here.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::cmd::{self, Context};
use crate::error::exit;
use crate::output::Ui;
use crate::settings::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "telespool",
    version,
    about = "Spool NeMo Evaluator's anonymous usage telemetry offline, upload it later",
    long_about = "Spool NeMo Evaluator's anonymous usage telemetry offline, upload it later.\n\n\
        Jobs on compute nodes without internet record events into a local SQLite spool; \
        `telespool upload`, run by cron where there is egress, sends them in redacted \
        batches in the format NeMo Evaluator's own client uses. `telespool inspect` shows \
        exactly what is queued and what would leave the machine.",
    after_help = "Examples:\n  \
        telespool record evaluation-task --task mmlu --framework lm-eval --model my/model --status success --duration 12.5\n  \
        telespool inspect --events\n  \
        telespool upload --quiet        # from cron on a node with egress\n  \
        telespool config set telemetry.level 1"
)]
pub struct Cli {
    /// Spool directory [default: $TELESPOOL_DIR, else telespool.spool in the config file,
    /// else ~/.local/share/telespool]
    #[arg(long, global = true, value_name = "DIR")]
    pub spool: Option<PathBuf>,

    /// Say more: one line per request, skipped event, and so on
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Print nothing when all went well (for cron)
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Append an event to the spool (cheap, durable, never needs the network)
    Record(RecordArgs),
    /// Show what is queued, and exactly what would be sent
    Inspect(InspectArgs),
    /// Send queued events to the endpoint in redacted batches
    Upload(UploadArgs),
    /// Move queued events into a file, for a machine with egress to `upload --from`
    Export(ExportArgs),
    /// Remove events from the spool
    Purge(PurgeArgs),
    /// Receive what an unmodified NeMo Evaluator client POSTs, and spool it
    Listen(ListenArgs),
    /// Run a command with a listener pointed at by its environment
    Run(RunArgs),
    /// Read or change the telemetry level and telespool's settings
    Config(ConfigArgs),
    /// Print shell completions to stdout
    Completions(CompletionsArgs),
    /// Print the man page (roff) to stdout
    Man,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
        telespool record evaluation-task --task mmlu --framework lm-eval --model my/model --status started\n  \
        telespool record launcher-job --executor slurm --deployment vllm --model my/model --status success --task mmlu --task gsm8k\n  \
        telespool record --json '{\"name\": \"EvaluationTaskEvent\", \"parameters\": {\"task\": \"mmlu\", \"frameworkName\": \"lm-eval\", \"model\": \"m\", \"status\": \"success\"}}'\n  \
        producer | telespool record --json -     # one event per line, all or nothing")]
pub struct RecordArgs {
    #[command(subcommand)]
    pub kind: Option<RecordKind>,

    /// An event as JSON {"name": ..., "parameters": {...}}, or `-` for one per line on stdin
    #[arg(long, value_name = "JSON")]
    pub json: Option<String>,

    /// Client version sent with the events [default: $NEMO_EVALUATOR_TELEMETRY_CLIENT_VERSION, else "undefined"]
    #[arg(long, global = true, value_name = "VERSION")]
    pub client_version: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RecordKind {
    /// An EvaluationTaskEvent, as nemo-evaluator sends it
    EvaluationTask(EvaluationTaskArgs),
    /// A LauncherJobEvent, as nemo-evaluator-launcher sends it
    LauncherJob(LauncherJobArgs),
}

#[derive(Debug, Args)]
pub struct EvaluationTaskArgs {
    /// Task name (1 to 256 bytes)
    #[arg(long)]
    pub task: String,
    /// Framework name (1 to 256 bytes)
    #[arg(long)]
    pub framework: String,
    /// Model name; stored as `redacted` at telemetry level 1
    #[arg(long)]
    pub model: String,
    /// started, success or failure
    #[arg(long)]
    pub status: String,
    /// Execution time in seconds (finite, >= 0) [default: 0]
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub duration: Option<f64>,
}

#[derive(Debug, Args)]
pub struct LauncherJobArgs {
    /// Executor type: local, slurm, lepton, ...
    #[arg(long)]
    pub executor: String,
    /// Deployment type: none, vllm, sglang, nim, ...
    #[arg(long)]
    pub deployment: String,
    /// Model name; stored as `redacted` at telemetry level 1
    #[arg(long)]
    pub model: String,
    /// started, success or failure
    #[arg(long)]
    pub status: String,
    /// A task of the job (repeat for several)
    #[arg(long = "task", value_name = "TASK")]
    pub tasks: Vec<String>,
    /// An exporter of the job (repeat for several)
    #[arg(long = "exporter", value_name = "EXPORTER")]
    pub exporters: Vec<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    telespool inspect\n  \
    telespool inspect --events --limit 10\n  \
    telespool inspect --json --events | jq '.events[].parameters.model'")]
pub struct InspectArgs {
    /// One JSON document on stdout instead of the summary
    #[arg(long)]
    pub json: bool,
    /// Also list queued events exactly as upload would send them now
    #[arg(long)]
    pub events: bool,
    /// How many events to list (0 lists all)
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: u64,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    telespool upload --quiet                  # cron: */10 * * * *\n  \
    telespool upload --dry-run                # print what would be sent, send nothing\n  \
    telespool upload --from telespool-export.jsonl\n  \
    telespool upload --endpoint https://collector.example/v1.1/events/json --ca-bundle site-ca.pem")]
pub struct UploadArgs {
    /// Endpoint URL [default: $NEMO_EVALUATOR_TELEMETRY_ENDPOINT, else telespool.endpoint, else NVIDIA's]
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Print the request bodies that would be sent; send and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Stop after this many requests
    #[arg(long, value_name = "N")]
    pub max_batches: Option<u64>,
    /// Ignore the backoff after earlier failures
    #[arg(long)]
    pub now: bool,
    /// Overall time for one request, e.g. 30s (connect: at most 10 s)
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub timeout: Option<Duration>,
    /// Extra CA certificates (PEM) to trust, for a site CA or proxy
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
    /// Allow plain http:// to a host that is not loopback
    #[arg(long)]
    pub allow_insecure: bool,
    /// First import a file written by `export`, then upload
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    telespool export --output /media/usb/telemetry.jsonl\n  \
    telespool export --output - | less")]
pub struct ExportArgs {
    /// Where to write the JSON Lines file (`-` for stdout, which implies --keep)
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,
    /// Leave the exported events queued
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Args)]
#[command(
    group(clap::ArgGroup::new("what").required(true).args(["older_than", "rejected", "all"])),
    after_help = "Examples:\n  \
        telespool purge --rejected --yes\n  \
        telespool purge --older-than 7d"
)]
pub struct PurgeArgs {
    /// Remove events whose event time is older than this, e.g. 7d
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub older_than: Option<Duration>,
    /// Remove the events the endpoint rejected
    #[arg(long)]
    pub rejected: bool,
    /// Remove every event
    #[arg(long)]
    pub all: bool,
    /// Do not ask for confirmation
    #[arg(long, short)]
    pub yes: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Accepts POST on any path; point clients at \
        http://127.0.0.1:8765/v1.1/events/json (see --help for the answers)\n\nExamples:\n  \
        telespool listen &\n  \
        telespool listen --bind 0.0.0.0:8765 --allow-remote   # a relay on a login node",
    after_long_help = "Accepts POST on any path; point clients at http://127.0.0.1:8765/v1.1/events/json \
        (NEMO_EVALUATOR_TELEMETRY_ENDPOINT). Each body must be a request body as upstream's \
        client sends it (Content-Type: application/json, at most 1 MiB), validated like \
        `record --json`, all or nothing, keeping its event times, session id and client \
        version. Answers: 200 once the events are durable in the spool; 400 with a one-line \
        reason for an invalid body; 405 for a method other than POST; 408 when a request \
        does not arrive within 10 s; 411 without Content-Length; 413 above 1 MiB; 415 for \
        another Content-Type; 503 when the spool cannot be written (also logged on stderr).\n\n\
        The telemetry level is read once at start: at 0 bodies are answered 200 and nothing \
        is stored; at 1 every model is stored as `redacted`. SIGTERM or SIGINT stops it after \
        the requests in flight; a second one stops it at once.\n\nExamples:\n  \
        telespool listen &\n  \
        NEMO_EVALUATOR_TELEMETRY_ENDPOINT=http://127.0.0.1:8765/v1.1/events/json nemo-evaluator run_eval ...\n  \
        telespool listen --bind 0.0.0.0:8765 --allow-remote   # a relay on a login node"
)]
pub struct ListenArgs {
    /// Address and port to listen on (port 0 picks a free one)
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8765")]
    pub bind: String,
    /// Allow an address other hosts can reach; anyone who reaches the port can add events
    #[arg(long)]
    pub allow_remote: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: CMD's; 128+N if it died of signal N; 127 if not found; \
        69 if the listener cannot bind (see --help)\n\nExamples:\n  \
        telespool run -- nemo-evaluator run_eval --eval_type mmlu ...\n  \
        srun telespool run -- python my_eval.py",
    after_long_help = "Starts `telespool listen` on 127.0.0.1 (a free port unless --port), runs CMD with \
        NEMO_EVALUATOR_TELEMETRY_ENDPOINT set to it (the rest of the environment untouched), \
        forwards SIGTERM, SIGINT and SIGHUP to CMD, waits for it, lets requests in flight \
        finish (at most 5 s), and exits with CMD's exit status: 128+N if CMD died of signal N, \
        127 if CMD was not found, 126 if it could not be executed. If the listener cannot \
        bind, CMD is not run and the exit status is 69.\n\nExamples:\n  \
        telespool run -- nemo-evaluator run_eval --eval_type mmlu ...\n  \
        srun telespool run -- python my_eval.py"
)]
pub struct RunArgs {
    /// Port for the listener on 127.0.0.1 (0 picks a free one)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub port: u16,
    /// The command to run, after `--`
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Keys: telemetry.level, telespool.spool, telespool.endpoint, \
    telespool.max_events, telespool.max_bytes, telespool.max_age, telespool.batch_events, \
    telespool.batch_bytes, telespool.lease, telespool.timeout\n\nExamples:\n  \
    telespool config set telemetry.level 1\n  \
    telespool config get telemetry.level\n  \
    telespool config set telespool.max_bytes 16MiB\n  \
    telespool config show"
)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub action: ConfigAction,
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print a key's effective value and where it came from
    Get {
        /// e.g. telemetry.level or telespool.max_age
        key: String,
    },
    /// Write a key to the config file (atomically, keeping every other key)
    Set { key: String, value: String },
    /// Print the config file
    Show,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh or fish
    pub shell: CompletionShell,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    crate::units::parse_duration(text)
}

/// Parses `args`, runs the command, and returns the process's exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    let ui = Ui {
        quiet: cli.quiet,
        verbose: cli.verbose,
    };
    let ctx = Context::new(Settings::from_process_env(), ui, cli.spool);
    match dispatch(cli.command, &ctx) {
        Ok(code) => code,
        Err(e) => {
            ui.error(&e);
            e.exit_code()
        }
    }
}

fn dispatch(command: Command, ctx: &Context) -> crate::Result<i32> {
    match command {
        Command::Record(args) => cmd::record::run(args, ctx),
        Command::Inspect(args) => cmd::inspect::run(args, ctx),
        Command::Upload(args) => cmd::upload::run(args, ctx),
        Command::Export(args) => cmd::export::run(args, ctx),
        Command::Purge(args) => cmd::purge::run(args, ctx),
        Command::Listen(args) => cmd::listen::run(args, ctx),
        Command::Run(args) => cmd::run::run(args, ctx),
        Command::Config(args) => cmd::config::run(args, ctx),
        Command::Completions(args) => cmd::docs::completions(args.shell, Cli::command()),
        Command::Man => cmd::docs::man(Cli::command()),
    }
}

/// Help and version go to stdout with exit 0; every other parse error becomes one
/// line on stderr and exit 64 (clap's own would be 2 and several lines).
fn clap_exit(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            exit::OK
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            exit::USAGE
        }
        _ => {
            eprintln!("telespool: {}", one_line(&e.to_string()));
            exit::USAGE
        }
    }
}

/// Folds clap's multi-line error into one line: the message (its first paragraph), a
/// tip if clap has one, and the `--help` of the command that was being parsed.
fn one_line(rendered: &str) -> String {
    let mut paragraphs = rendered.split("\n\n");
    let message = paragraphs
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let tip = rendered
        .lines()
        .find_map(|l| l.trim().strip_prefix("tip: "))
        .map(|t| format!(" ({t})"))
        .unwrap_or_default();
    let command = rendered
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))
        .map(|usage| {
            usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['-', '<', '[']))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "telespool".to_string());
    format!("{message}{tip}; see `{command} --help`")
}
