//! `render`: write what every step would act on, for review or by-hand use.

use std::path::Path;

use super::load_and_plan;
use crate::cli::GlobalArgs;
use crate::components;
use crate::exit;

pub fn render(g: &GlobalArgs, file: &Path, out: &Path) -> u8 {
    let (_, plan) = match load_and_plan(g, file) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let registry = components::registry();
    let plan_steps = plan.steps.len();
    let result = (|| -> Result<usize, String> {
        let steps_dir = out.join("steps");
        std::fs::create_dir_all(&steps_dir).map_err(|e| format!("cannot create {}: {e}", steps_dir.display()))?;
        let write = |path: &Path, text: &str| {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
        };
        let mut files = 0;
        let plan_json = serde_json::to_string_pretty(&plan).map_err(|e| e.to_string())?;
        write(&out.join("plan.json"), &plan_json)?;
        files += 1;
        for step in &plan.steps {
            let name = step.id.replace('/', "__");
            let spec = serde_json::to_string_pretty(&step.spec).map_err(|e| e.to_string())?;
            write(&steps_dir.join(format!("{name}.json")), &spec)?;
            files += 1;
            if let Some(handler) = registry.get(&step.kind) {
                for r in handler.render(&step.spec).map_err(|e| format!("{}: {e}", step.id))? {
                    write(&out.join(&r.path), &r.contents)?;
                    files += 1;
                }
            }
        }
        Ok(files)
    })();
    match result {
        Ok(n) => {
            if g.output == crate::cli::Output::Json {
                println!("{}", serde_json::json!({ "out": out, "files": n, "steps": plan_steps }));
            } else if !g.quiet {
                eprintln!("wrote {} under {}", super::count(n, "file", "files"), out.display());
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::STEP_FAILED
        }
    }
}
