//! `rrr`: record a kernel reproducer once, replay it under a tracer into a Perfetto trace.

mod cli;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RRR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = cli::run();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<cli::Exit>() {
            Some(cli::Exit(code, said)) => {
                eprintln!("rrr: {said}");
                std::process::ExitCode::from(*code)
            }
            None => {
                eprintln!("rrr: error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}
