//! The command line: clap definitions of every command and global flag, and
//! dispatch to the library. Rendering of results lives beside each command.

pub mod check;
pub mod info;
pub mod manual;
pub mod mirror_config;
pub mod output;
pub mod process;
pub mod report;
pub mod search;
pub mod service;
pub mod sync;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::{Error, Result};
use crate::exec::progress::ProgressMode;
use crate::image::Platform;
use crate::registry::RegistryOptions;
use crate::source::{PlatformSelection, SourceOptions};

/// `0.1.0 (commit abc123def456)`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("OCCY_GIT_COMMIT"), ")");

/// The top-level help: commands, then the global flags in brief (each
/// command's `--help` describes them in full), so it fits on one screen.
const TOP_HELP: &str = "\
{about-with-newline}
{usage-heading} {usage}

Commands:
{subcommands}

Global options, taken by every command (in full: occy COMMAND --help; env variables in brackets):
  -O, --output-format text|json|markdown|github  results on stdout [OCCY_OUTPUT_FORMAT]
  -v, --verbose (-vv), -q, --quiet       more logging (RUST_LOG) / only errors
      --color auto|always|never          [OCCY_COLOR; NO_COLOR is honoured]
      --no-progress                      no bars or status lines [OCCY_NO_PROGRESS]
  registries: --username [OCCY_USERNAME]  --password [OCCY_PASSWORD]
      --authfile FILE [REGISTRY_AUTH_FILE]  --insecure-registry HOST[:PORT] [OCCY_INSECURE_REGISTRY]
      --cert-dir DIR [OCCY_CERT_DIR]  --retries N [OCCY_RETRIES]  --rate-limit N [OCCY_RATE_LIMIT]
      --token-realm HOST [OCCY_TOKEN_REALM]
  layers: --compression gzip|zstd [OCCY_COMPRESSION]  --cache-dir DIR [OCCY_CACHE_DIR]  --no-cache
  -h, --help  -V, --version{after-help}";

/// The heading of the global flags in a command's `--help`.
pub const GLOBAL_HEADING: &str = "Global options";

/// The line that replaces the global flags in a command's short help (`-h`).
const GLOBAL_POINTER: &str =
    "Global options (output format, logging, colour, registry access, layer cache): occy --help";

/// The command line as clap sees it: the derived definitions, with each
/// command's short help (`-h`) ending in one line that points to the global
/// flags instead of listing them (its `--help` lists them under
/// "Global options"), as cargo and ripgrep do.
pub fn command_line() -> clap::Command {
    <Cli as clap::CommandFactory>::command().mut_subcommands(|sub| {
        let examples = sub.get_after_help().map(|h| h.to_string());
        let pointer = GLOBAL_POINTER.to_string();
        let short = match &examples {
            Some(e) => format!("{e}\n\n{pointer}"),
            None => pointer,
        };
        let long = examples.unwrap_or_default();
        sub.after_help(short).after_long_help(long)
    })
}

/// Parses the process's arguments (exits with clap's message on a usage error).
pub fn parse() -> Cli {
    let matches = command_line().get_matches();
    match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    }
}

/// How results are printed on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// Readable text and tables.
    #[default]
    Text,
    /// One JSON document.
    Json,
    /// Markdown (the sync plan, for a pull-request comment; other commands print text).
    Markdown,
    /// Graphviz DOT (the sync plan's work graph, for `dot -Tsvg`; other commands print text).
    Dot,
    /// Text, and errors also as GitHub workflow annotations on stdout
    /// (`::error file=F,line=L,col=C::message`, a line per sync-file problem).
    Github,
}

/// Prints a command's error: for people on stderr; with `-O json` a sync
/// file's problems also as `{"errors": [{file, line, column, …}]}` on
/// stdout, with `-O github` every error also as workflow annotations on
/// stdout, so a CI job can mark the lines of a pull request.
pub fn report_error(e: &Error, format: OutputFormat) {
    eprintln!("error: {e}");
    match (format, e) {
        (OutputFormat::Json, Error::SyncFile(problems)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&problems.json()).unwrap_or_else(|_| problems.json().to_string())
            );
        }
        (OutputFormat::Github, Error::SyncFile(problems)) => print!("{}", problems.github()),
        (OutputFormat::Github, other) => {
            println!("::error::{}", crate::spec::diagnostic::github_data(&other.to_string()));
        }
        _ => {}
    }
}

/// occy keeps container images where they belong.
///
/// Copy, inspect and check images between registries, docker-save archives,
/// OCI layouts and directories.
#[derive(Debug, Parser)]
#[command(name = "occy", version = VERSION, propagate_version = true, max_term_width = 100)]
#[command(help_template = TOP_HELP)]
#[command(
    after_help = "Examples:\n  occy sync mirror.yaml --plan\n  occy process registry://127.0.0.1:5000/app:1.0 oci:///srv/layouts/app:1.0\n  occy sync mirror.yaml --every 15m --listen 0.0.0.0:9090 --metrics-file m.prom --report r.json\n\nExit codes: 0 success, 1 failure, 2 usage error, 3 changes pending (--plan --detailed-exitcode).\nDocs: docs/ in the source (start with docs/getting-started.md), and `occy man`."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Output format of results on stdout (logs always go to stderr)
    #[arg(short = 'O', long, global = true, help_heading = GLOBAL_HEADING, hide_short_help = true, value_enum, default_value_t = OutputFormat::Text, env = "OCCY_OUTPUT_FORMAT")]
    pub output_format: OutputFormat,

    /// More logging (-v: requests, -vv: everything); RUST_LOG overrides
    #[arg(short, long, global = true, help_heading = GLOBAL_HEADING, hide_short_help = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr
    #[arg(short, long, global = true, help_heading = GLOBAL_HEADING, hide_short_help = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Registry user name
    #[arg(long, global = true, help_heading = GLOBAL_HEADING, hide_short_help = true, env = "OCCY_USERNAME")]
    pub username: Option<String>,

    /// Registry password or token
    #[arg(
        long,
        global = true, help_heading = GLOBAL_HEADING, hide_short_help = true,
        env = "OCCY_PASSWORD",
        hide_env_values = true,
        requires = "username"
    )]
    pub password: Option<String>,

    /// A containers auth.json with registry credentials
    #[arg(long, global = true, help_heading = GLOBAL_HEADING, hide_short_help = true, env = "REGISTRY_AUTH_FILE")]
    pub authfile: Option<PathBuf>,

    /// Allow plain HTTP or an unverified certificate for this HOST[:PORT] (repeatable)
    #[arg(
        long = "insecure-registry",
        global = true, help_heading = GLOBAL_HEADING, hide_short_help = true,
        value_name = "HOST[:PORT]",
        env = "OCCY_INSECURE_REGISTRY",
        value_delimiter = ','
    )]
    pub insecure_registry: Vec<String>,

    /// Directory of extra CA certificates (*.crt, *.pem) for registries
    #[arg(long, global = true, help_heading = GLOBAL_HEADING, hide_short_help = true, env = "OCCY_CERT_DIR")]
    pub cert_dir: Option<PathBuf>,

    /// Retries for transient failures (connection errors, 5xx, 429)
    #[arg(long, global = true, help_heading = GLOBAL_HEADING, hide_short_help = true, default_value_t = 3, env = "OCCY_RETRIES")]
    pub retries: u32,

    /// Also send a registry's credentials to the token service on HOST when
    /// the registry names it as its realm (repeatable). Without it they go
    /// only to the registry's own host or a parent domain of it.
    #[arg(
        long = "token-realm",
        global = true, help_heading = GLOBAL_HEADING, hide_short_help = true,
        value_name = "HOST",
        env = "OCCY_TOKEN_REALM",
        value_delimiter = ','
    )]
    pub token_realm: Vec<String>,

    /// At most N requests per second per registry host (0: no cap; occy keeps
    /// under a rate a registry announces or teaches with 429s by itself)
    #[arg(long, global = true, help_heading = GLOBAL_HEADING, hide_short_help = true, default_value_t = 0.0, env = "OCCY_RATE_LIMIT")]
    pub rate_limit: f64,

    /// Encoding of layers that filters rewrite: gzip or zstd (default: each
    /// layer keeps its own)
    #[arg(long, global = true, help_heading = GLOBAL_HEADING, hide_short_help = true, value_name = "FORMAT", env = "OCCY_COMPRESSION")]
    pub compression: Option<String>,

    /// Cache directory: what a filter chain made of each layer, and which
    /// registry repositories held which blobs, to mount them from (default:
    /// $XDG_CACHE_HOME/occy or ~/.cache/occy)
    #[arg(long, global = true, help_heading = GLOBAL_HEADING, hide_short_help = true, value_name = "DIR", env = "OCCY_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Do not use the cache (layers made by filters, remembered blob locations)
    #[arg(long, global = true, help_heading = GLOBAL_HEADING, hide_short_help = true, conflicts_with = "cache_dir")]
    pub no_cache: bool,

    /// Colour: auto (on a terminal, unless NO_COLOR is set), always or never
    #[arg(long, global = true, help_heading = GLOBAL_HEADING, hide_short_help = true, value_enum, default_value_t = ColorChoice::Auto, env = "OCCY_COLOR")]
    pub color: ColorChoice,

    /// No progress bars or periodic status lines (a line per finished image stays)
    #[arg(long, global = true, help_heading = GLOBAL_HEADING, hide_short_help = true, env = "OCCY_NO_PROGRESS")]
    pub no_progress: bool,
}

/// When to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

impl GlobalArgs {
    /// Registry settings from the flags.
    pub fn registry_options(&self) -> Result<RegistryOptions> {
        if self.rate_limit < 0.0 || !self.rate_limit.is_finite() {
            return Err(Error::usage(format!(
                "invalid --rate-limit {}: expected a number of requests per second, 0 for unlimited",
                self.rate_limit
            )));
        }
        if let Some(dir) = &self.cert_dir {
            if !dir.is_dir() {
                return Err(Error::usage(format!("--cert-dir {} is not a directory", dir.display())));
            }
        }
        Ok(RegistryOptions {
            username: self.username.clone(),
            password: self.password.clone(),
            authfile: self.authfile.clone(),
            insecure_hosts: self.insecure_registry.clone(),
            cert_dir: self.cert_dir.clone(),
            retries: self.retries,
            rate_limit: (self.rate_limit > 0.0).then_some(self.rate_limit),
            token_realms: self.token_realm.clone(),
            scheme_memory: if self.no_cache {
                None
            } else {
                crate::cache::LayerCache::open(self.cache_dir.as_deref()).map(|c| c.hosts_dir())
            },
        })
    }

    /// Whether to colour what goes to a stream (`terminal`: it is one).
    pub fn colour(&self, terminal: bool) -> bool {
        match self.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    /// Whether to colour stdout.
    pub fn colour_stdout(&self) -> bool {
        self.colour(std::io::stdout().is_terminal())
    }

    /// How to show the progress of a run: bars on a terminal, else lines
    /// (periodic status too unless --no-progress); `-q` shows nothing. A
    /// one-image command (`many` false) shows only bars.
    pub fn progress_mode(&self, many: bool) -> ProgressMode {
        let terminal = std::io::stderr().is_terminal();
        match (self.quiet, self.no_progress, terminal, many) {
            (true, ..) => ProgressMode::Off,
            (false, false, true, _) => ProgressMode::Bars,
            (false, no_progress, _, true) => ProgressMode::Lines { periodic: !no_progress },
            (false, _, _, false) => ProgressMode::Off,
        }
    }

    /// Source settings from the flags.
    pub fn source_options(&self) -> Result<SourceOptions> {
        Ok(SourceOptions {
            registry: self.registry_options()?,
        })
    }
}

/// Platform choice shared by commands that read images.
#[derive(Debug, Args, Clone)]
pub struct PlatformArgs {
    /// Platform to take from a multi-arch index: os/arch[/variant] (repeatable;
    /// one platform is written as its own manifest, several as an index)
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Vec<String>,

    /// Take every platform of a multi-arch index (and keep the index)
    #[arg(long, conflicts_with = "platform")]
    pub all_platforms: bool,
}

impl PlatformArgs {
    /// The selection the flags ask for.
    pub fn selection(&self) -> Result<PlatformSelection> {
        if self.all_platforms {
            return Ok(PlatformSelection::All);
        }
        if self.platform.is_empty() {
            return Ok(PlatformSelection::Default);
        }
        Ok(PlatformSelection::List(
            self.platform
                .iter()
                .map(|p| Platform::parse(p))
                .collect::<Result<_>>()?,
        ))
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy an image from a source to a destination
    #[command(
        after_help = "Examples:\n  occy process registry://127.0.0.1:5000/app:1.0 tar:///tmp/app.tar\n  occy process tar:///tmp/app.tar oci:///srv/layouts/app:1.0\n  occy process registry://quay.io/org/app:1.0 oci:///tmp/app --all-platforms"
    )]
    Process(process::ProcessArgs),

    /// Show an image's manifest, config, layers, history and referrers (cosign signatures)
    #[command(
        after_help = "Examples:\n  occy info registry://quay.io/org/app:1.0\n  occy info registry://quay.io/org/app:1.0 --verify-key cosign.pub\n  occy -O json info oci:///srv/layouts/app:1.0"
    )]
    Info(info::InfoArgs),

    /// Find paths in every layer of an image
    #[command(
        after_help = "Examples:\n  occy search registry://127.0.0.1:5000/app:1.0 '**/*.so'\n  occy -O json search oci:///srv/layouts/app:1.0 '^etc/.*\\.conf$' --regex"
    )]
    Search(search::SearchArgs),

    /// Validate an image: structure, history, compression, layer contents
    #[command(
        after_help = "Examples:\n  occy check registry://127.0.0.1:5000/app:1.0 --fast\n  occy -O json check tar:///tmp/app.tar"
    )]
    Check(check::CheckArgs),

    /// Bring destinations up to date with a sync file; --plan shows what would change
    #[command(
        after_help = "Examples:\n  occy sync mirror.yaml --plan\n  occy sync mirror.yaml --plan -O markdown --detailed-exitcode\n  occy sync mirror.yaml --plan --out plan.json && occy sync --apply plan.json\n  occy sync mirror.yaml -J 4 -j 8 --check full\n  occy sync mirror.yaml --every 15m --listen 0.0.0.0:9090\n\nExit codes: 0 done (with --plan --detailed-exitcode: nothing to do), 1 some targets failed,\n2 sync-file or usage error (nothing was done), 3 (--plan --detailed-exitcode) changes pending."
    )]
    Sync(sync::SyncArgs),

    /// Write containerd, registries.conf or OpenShift mirror configs from a sync file
    #[command(
        name = "mirror-config",
        after_help = "Examples:\n  occy mirror-config inside.yaml --format containerd -o /etc/containerd/certs.d\n  occy mirror-config inside.yaml --format registries.conf -o /etc/containers/registries.conf.d\n  occy mirror-config inside.yaml --format idms | kubectl apply -f -\n\nA mapping a format cannot express (a tag rename, filters that change digests, a repository\nrename containerd cannot write) is left out with a warning. Exit codes: 0 written, 1 nothing\nto write, 2 sync-file or usage error."
    )]
    MirrorConfig(mirror_config::MirrorConfigArgs),
    /// Merge the JSON reports of a sharded sync into one summary; exit 1 if a shard failed or is missing
    #[command(
        after_help = "Examples:\n  occy -O json sync mirror.yaml --shard auto/3 > report-$JOB_COMPLETION_INDEX.json\n  occy report report-*.json\n  occy -O markdown report report-*.json >> \"$GITHUB_STEP_SUMMARY\"\n\nExit codes: 0 every shard reported and no target failed, 1 a target failed or a shard's report is missing,\n2 a file is not a report, or the reports are not of one run."
    )]
    Report(report::ReportArgs),

    /// Print the JSON Schema of sync files (for editors)
    #[command(after_help = "Example:\n  occy schema > occy-sync.schema.json")]
    Schema,

    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(
        after_help = "Examples:\n  occy completions bash > ~/.local/share/bash-completion/completions/occy\n  occy completions zsh > ~/.zfunc/_occy\n  occy completions fish > ~/.config/fish/completions/occy.fish"
    )]
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff), or write one per command into a directory
    #[command(after_help = "Examples:\n  occy man | man -l -\n  sudo occy man --dir /usr/local/share/man/man1")]
    Man {
        /// Write occy.1 and occy-COMMAND.1 here instead of printing occy.1
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,

        /// Print the command reference in Markdown (docs/commands.md) instead
        #[arg(long, conflicts_with = "dir")]
        markdown: bool,
    },
}

/// Runs a parsed command line; returns the exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    match &cli.command {
        Command::Process(args) => {
            let code = process::run(&cli.global, args).await;
            crate::archive::import::remove_unpacked();
            code
        }
        Command::Info(args) => info::run(&cli.global, args).await,
        Command::Search(args) => search::run(&cli.global, args).await,
        Command::Check(args) => check::run(&cli.global, args).await,
        Command::Sync(args) => {
            let code = sync::run(&cli.global, args).await;
            // Archives unpacked to be imported are not kept.
            crate::archive::import::remove_unpacked();
            code
        }
        Command::MirrorConfig(args) => mirror_config::run(&cli.global, args).await,
        Command::Report(args) => report::run(&cli.global, args).await,
        Command::Schema => {
            print!("{}", crate::spec::json_schema());
            Ok(0)
        }
        Command::Completions { shell } => {
            let mut cmd = command_line();
            clap_complete::generate(*shell, &mut cmd, "occy", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man { dir, markdown } => manual::run(dir.as_deref(), *markdown),
    }
}
