//! Shell completions and the man page, generated from the clap definitions so they
//! can never disagree with the real flags.

use crate::cli::CompletionShell;
use crate::error::{Error, Result};

pub fn completions(shell: CompletionShell, mut command: clap::Command) -> Result<i32> {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut command, "telespool", &mut std::io::stdout());
    Ok(0)
}

pub fn man(command: clap::Command) -> Result<i32> {
    clap_mangen::Man::new(command)
        .render(&mut std::io::stdout())
        .map_err(|e| Error::io(format!("cannot write the man page: {e}")))?;
    Ok(0)
}
