//! What each CLI command does. Each returns an exit code; user-facing
//! problems are printed here, at the edge, never deeper down.

mod apply;
mod backend;
mod backup;
mod bundle;
mod check;
mod cluster_data;
mod drift;
mod gitlab_data;
mod inspect;
mod logging;
mod outputs;
mod render;
mod state_cmds;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::{Cli, Command, GlobalArgs, Output};
use crate::exit;
use crate::inventory::{self, Loaded, Report};
use crate::plan::{Plan, PlanError};

pub fn run(cli: Cli) -> u8 {
    let g = &cli.global;
    match &cli.command {
        Command::Init => {
            print!("{}", STARTER_INVENTORY);
            exit::OK
        }
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&inventory::json_schema()).unwrap_or_default()
            );
            exit::OK
        }
        Command::Completions { shell } => {
            print!("{}", completions(*shell));
            exit::OK
        }
        Command::Validate(i) => inspect::validate(g, &i.inventory),
        Command::Plan {
            inventory,
            destroy,
            refresh,
            detailed_exitcode,
        } => inspect::plan(g, &inventory.inventory, *destroy, *refresh, *detailed_exitcode),
        Command::Status => inspect::status(g),
        Command::Outputs { show_secrets } => outputs::outputs(g, *show_secrets),
        Command::Render { inventory, out } => render::render(g, &inventory.inventory, out),
        Command::Apply { inventory, only, from } => apply::apply(g, &inventory.inventory, only, from.as_deref()),
        Command::Destroy(i) => apply::destroy(g, &i.inventory),
        Command::Check(i) => check::check(g, &i.inventory),
        Command::Drift(i) => drift::drift(g, &i.inventory),
        Command::Bundle { action } => bundle::bundle(g, action),
        Command::Backup {
            inventory,
            out,
            passphrase,
        } => backup::backup(g, &inventory.inventory, out.as_deref(), passphrase),
        Command::Restore {
            from,
            inventory,
            passphrase,
            force,
            clusters,
            gitlab,
        } => backup::restore(g, from, &inventory.inventory, passphrase, *force, *clusters, *gitlab),
        Command::ForceUnlock { id, inventory } => state_cmds::force_unlock(g, id, inventory.as_deref()),
        Command::MigrateState { inventory, to } => state_cmds::migrate_state(g, &inventory.inventory, *to),
    }
}

/// The completion script for `shell`. clap_complete's bash script names the
/// states of a hyphenated binary two ways (`nautes__install__subcmd__plan`
/// where it tracks the words, `nautes__subcmd__install__subcmd__plan` where
/// it completes), so nothing completed after a subcommand; we make the
/// second spelling match the first.
pub fn completions(shell: clap_complete::Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "nautes-install", &mut out);
    let script = String::from_utf8_lossy(&out).into_owned();
    match shell {
        clap_complete::Shell::Bash => script.replace("nautes__subcmd__install", "nautes__install"),
        _ => script,
    }
}

pub const STARTER_INVENTORY: &str = include_str!("../../inventories/starter.yaml");

/// Load, validate and plan, printing every finding. Warnings are shown and
/// do not stop; errors stop with the inventory exit code.
pub(crate) fn load_and_plan(g: &GlobalArgs, file: &Path) -> Result<(Loaded, Plan), u8> {
    let mut loaded = match inventory::load_file(file) {
        Ok(l) => l,
        Err(report) => {
            print_report(g, &report);
            return Err(exit::INVALID_INVENTORY);
        }
    };
    let mut report = inventory::validate::validate(&loaded);
    if report.errors() > 0 {
        print_report(g, &report);
        return Err(exit::INVALID_INVENTORY);
    }
    // Hosts Terraform already made are part of the inventory from here on.
    // (An unreadable state is reported by the commands that need it.)
    let place = backend::from_inventory(g, &loaded);
    let state = match &place {
        backend::Where::Local(path) => crate::state::State::load(path).ok(),
        // Only Terraform's hosts are read from it: skip the round trip when there are none.
        backend::Where::Kube(_) if loaded.inventory.infrastructure.modules.is_empty() => None,
        backend::Where::Kube(_) => backend::load_blocking(&place).ok(),
    };
    if let Some(state) = state {
        crate::components::infrastructure::merge_hosts(&mut loaded, &state);
    }
    match crate::components::plan(&loaded) {
        Ok(plan) => {
            if report.warnings() > 0 {
                print_report(g, &report);
            }
            Ok((loaded, plan))
        }
        Err(PlanError::Invalid(diags)) => {
            report.diagnostics.extend(diags);
            report.sort();
            print_report(g, &report);
            Err(exit::INVALID_INVENTORY)
        }
        Err(PlanError::Cycle(cycle)) => {
            eprintln!("error: steps depend on each other in a cycle: {}", cycle.join(" -> "));
            eprintln!("hint: check the `before`/`after` of hooks on these steps");
            Err(exit::PLAN_FAILED)
        }
    }
}

pub(crate) fn print_report(g: &GlobalArgs, report: &Report) {
    match g.output {
        Output::Json => println!("{}", report.to_json()),
        Output::Text => eprint!("{}", report.render(std::io::stderr().is_terminal())),
    }
}

/// "1 file", "2 files".
pub(crate) fn count(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Unknown step ids, each with the nearest real one when it is a typo away.
pub(crate) fn unknown_steps(unknown: &[String], plan: &Plan) -> String {
    let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    unknown
        .iter()
        .map(|u| match inventory::validate::closest(u, &ids) {
            Some(best) => format!("{u} (did you mean {best}?)"),
            None => u.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn state_path(workdir: &Path) -> PathBuf {
    workdir.join("state.json")
}

/// Where steps write kubeconfigs, keys and credentials: the inventory's
/// `outputs.dir`, else `<workdir>/outputs`.
pub(crate) fn outputs_dir(g: &GlobalArgs, loaded: &Loaded) -> PathBuf {
    match &loaded.inventory.outputs.dir {
        Some(d) => loaded.resolve(d),
        None => g.workdir.join("outputs"),
    }
}

/// Ask a person to confirm, or require --yes when nobody can answer.
pub(crate) fn confirm(g: &GlobalArgs, question: &str) -> Result<(), u8> {
    if g.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        eprintln!("error: {question} needs confirmation; pass --yes when not running on a terminal");
        return Err(exit::USAGE);
    }
    eprint!("{question} Type `yes` to continue: ");
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if answer.trim() == "yes" {
        Ok(())
    } else {
        eprintln!("cancelled");
        Err(exit::USAGE)
    }
}
/// The run's limits: the inventory's `settings.timeouts` over the engine's
/// defaults. `http`, when set, also bounds downloads.
pub(crate) fn limits(t: &crate::inventory::Timeouts) -> crate::engine::Limits {
    let mut l = crate::engine::Limits::default();
    let set = |slot: &mut std::time::Duration, d: Option<crate::inventory::duration::HumanDuration>| {
        if let Some(d) = d {
            *slot = d.get();
        }
    };
    set(&mut l.ssh_connect, t.ssh_connect);
    set(&mut l.command, t.command);
    set(&mut l.node_ready, t.node_ready);
    set(&mut l.rollout, t.rollout);
    set(&mut l.http, t.http);
    set(&mut l.download, t.http);
    set(&mut l.terraform, t.terraform);
    set(&mut l.ansible, t.ansible);
    l
}
