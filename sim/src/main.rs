//! `playtree-sim`: see the crate's documentation and README.md.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = playtree_sim::Args::parse();
    if let Some(steps) = args.print_script {
        let shape = args.shape();
        for plan in shape.players().iter().take(20) {
            let script = shape.steps(plan, args.seconds * 1000);
            println!("{} {:?} {:?}", plan.id, plan.profile, plan.activity);
            for step in script.iter().take(steps) {
                println!("  +{} ms {:?}", step.after_ms, step.action);
            }
        }
        println!("kills at {:?} ms", shape.kills(args.seconds * 1000));
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("playtree-sim: no tokio runtime: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let json = args.json.clone();
    let seed = args.seed;
    match runtime.block_on(playtree_sim::run(args)) {
        Ok(report) => {
            print!("{}", report.summary());
            if let Some(path) = json
                && let Err(error) = report.write(&path)
            {
                eprintln!("playtree-sim: writing {}: {error:#}", path.display());
                return std::process::ExitCode::from(2);
            }
            if report.passed() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("playtree-sim: {error:#} (seed {seed})");
            std::process::ExitCode::from(2)
        }
    }
}
