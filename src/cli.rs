//! Command-line arguments. Exit codes are part of the interface and are
//! listed in [`crate::exit`] and the README.

use std::path::PathBuf;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "nautes-install",
    version,
    about = "Install, upgrade and tear down the Nautes platform from one inventory file"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The command line as parsed: global options are accepted anywhere, but
/// described once, in the top-level help, instead of in every subcommand's.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    // Globals are copied into subcommands while building; hide the copies.
    cmd.build();
    let globals: Vec<clap::Id> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .map(|a| a.get_id().clone())
        .collect();
    hide_globals(cmd, &globals)
}

fn hide_globals(cmd: clap::Command, globals: &[clap::Id]) -> clap::Command {
    cmd.mut_subcommands(|sc| {
        let sc = sc
            .mut_args(|a| if globals.contains(a.get_id()) { a.hide(true) } else { a })
            .after_help("Global options (--workdir, --output, -v, -q, --concurrency, --yes, --accept-new-host-keys) work here too: see `nautes-install --help`.");
        hide_globals(sc, globals)
    })
}

/// Parse the process's arguments (exits with clap's message on a usage error).
pub fn parse() -> Cli {
    let matches: ArgMatches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where state, lock, logs and generated files live.
    #[arg(long, global = true, env = "NAUTES_WORKDIR", default_value = ".nautes")]
    pub workdir: PathBuf,
    /// `text` for people, `json` for programs (JSON lines on stdout).
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// More detail on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Steps run at once (default: settings.concurrency, else 8).
    #[arg(long, global = true)]
    pub concurrency: Option<usize>,
    /// Answer yes to confirmations (needed for destructive actions when not on a terminal).
    #[arg(long, global = true)]
    pub yes: bool,
    /// Trust the SSH host key of a host seen for the first time (recorded in
    /// known_hosts). A changed key is always refused.
    #[arg(long, global = true)]
    pub accept_new_host_keys: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum BundleAction {
    /// Download everything the inventory needs (run on a connected machine), then seal.
    Fetch {
        #[command(flatten)]
        inventory: InventoryArg,
        /// Directory to build the bundle in (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Check every file of a bundle against its checksums file, and that
    /// every file is listed there; lists every problem.
    Verify {
        /// The bundle directory (the one holding `checksums.sha256`).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Write `checksums.sha256` for the files in a bundle assembled by hand.
    Seal {
        /// The bundle directory to seal.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    Local,
    Kubernetes,
}

#[derive(Debug, Args)]
pub struct InventoryArg {
    /// The inventory file (`-` reads it from stdin).
    #[arg(short, long = "inventory", value_name = "FILE")]
    pub inventory: PathBuf,
}

/// Where the passphrase of a backup archive comes from: like the
/// inventory's secrets, never on the command line itself.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct PassphraseArg {
    /// Environment variable holding the archive's passphrase.
    #[arg(long, value_name = "NAME")]
    pub passphrase_env: Option<String>,
    /// File holding the archive's passphrase (readable by its owner only).
    #[arg(long, value_name = "PATH")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a commented starter inventory.
    Init,
    /// Check an inventory and report every problem with its place in the file.
    Validate(InventoryArg),
    /// Show which steps would run and why, without changing anything.
    Plan {
        #[command(flatten)]
        inventory: InventoryArg,
        /// Show what `destroy` would tear down, in order.
        #[arg(long)]
        destroy: bool,
        /// Read the live systems (as `drift` does) and plan the steps whose
        /// objects differ from what they made, not only what the state says.
        #[arg(long, conflicts_with = "destroy")]
        refresh: bool,
        /// Exit 0 when there is nothing to do, 2 when there are changes (1
        /// when a step's live state cannot be read), as `terraform plan -detailed-exitcode`.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Make the world match the inventory; re-running resumes and skips what is done.
    Apply {
        #[command(flatten)]
        inventory: InventoryArg,
        /// Run only these steps (plus what they need that is not done yet).
        #[arg(long, num_args = 1.., value_name = "STEP")]
        only: Vec<String>,
        /// Run this step and everything that depends on it.
        #[arg(long, value_name = "STEP", conflicts_with = "only")]
        from: Option<String>,
    },
    /// Tear down everything recorded in the state, in reverse dependency order.
    Destroy(InventoryArg),
    /// Show recorded steps and recent runs of this workdir.
    Status,
    /// Summarise what the install produced: endpoints, kubeconfigs, CA and
    /// certificates, Vault and where its credentials are (masked by default).
    Outputs {
        /// Print secret values (Vault root token, unseal keys) instead of masking them.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Write every rendered artifact (step inputs, configs, manifests) for review.
    Render {
        #[command(flatten)]
        inventory: InventoryArg,
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Gather facts and run the preflight checks on the inventory's hosts; changes nothing.
    Check(InventoryArg),
    /// Read the live clusters and Vault and show, per step, what differs
    /// from what `apply` would make; changes nothing. Exit code 0: nothing
    /// differs, 2: something does, 1: the live systems could not be read.
    Drift(InventoryArg),
    /// Build, seal or verify an air-gap bundle directory.
    Bundle {
        #[command(subcommand)]
        action: BundleAction,
    },
    /// Write one archive of the state, the outputs, the inventory, the
    /// clusters' etcd, GitLab's data (when placed on a host) and (for a
    /// Vault/OpenBao this installer initialised) a raft snapshot; secrets in
    /// it are encrypted with the passphrase.
    Backup {
        #[command(flatten)]
        inventory: InventoryArg,
        /// The archive to write (default: nautes-backup-<UTC time>.tar.gz here).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        passphrase: PassphraseArg,
    },
    /// Check a backup archive whole, then restore the state, the outputs
    /// and OpenBao's data from it; run `apply` afterwards to converge.
    Restore {
        /// The archive `backup` wrote.
        #[arg(long, value_name = "ARCHIVE")]
        from: PathBuf,
        #[command(flatten)]
        inventory: InventoryArg,
        #[command(flatten)]
        passphrase: PassphraseArg,
        /// Replace a workdir state that already records steps.
        #[arg(long)]
        force: bool,
        /// Also put the clusters' etcd back from their snapshots in the
        /// archive: rolls each cluster back, restarting its datastore.
        #[arg(long)]
        clusters: bool,
        /// Also put GitLab's data back (gitlab-backup restore, with its
        /// gitlab-secrets.json and gitlab.rb) on the host the installer
        /// placed it on: rolls GitLab back, restarting it.
        #[arg(long)]
        gitlab: bool,
    },
    /// Remove a state lock left by a run that is gone (ID: the holder the refusal named).
    ForceUnlock {
        /// The lock holder as shown, e.g. `alice@build-1 pid 4242`.
        #[arg(value_name = "ID")]
        id: String,
        /// The inventory naming the state backend (default: the one this workdir last used).
        #[arg(short, long = "inventory", value_name = "FILE")]
        inventory: Option<PathBuf>,
    },
    /// Move the state to another backend (both locked while it moves); the inventory's
    /// `state` section names the kubernetes one.
    MigrateState {
        #[command(flatten)]
        inventory: InventoryArg,
        /// Where the state goes.
        #[arg(long, value_enum)]
        to: BackendChoice,
    },
    /// Print the JSON Schema of the inventory.
    Schema,
    /// Print shell completions.
    Completions {
        /// The shell to print completions for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}
