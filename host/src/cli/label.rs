//! `sedna label`: hard examples out to a labelling tool, corrected labels back in.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::learn::labels::{self, LabelFormat};

#[derive(Subcommand)]
pub enum LabelCommand {
    /// Write hard examples (raw frames, predictions as pre-labels) for a labelling tool.
    Export(Export),
    /// Append corrected labels to a Sedna data index, checking each one.
    Import(Import),
}

#[derive(Args)]
pub struct Export {
    /// The hard-example directory (the job's `HE_SAVED_URL`, else `<outputDir>/hard_examples`).
    hard_examples: PathBuf,
    #[arg(long, value_enum)]
    format: LabelFormat,
    /// Where to write `images/` and the labels.
    #[arg(long)]
    out: PathBuf,
    /// Class names in the model's output order, comma-separated (default: 0, 1, ...).
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
}

#[derive(Args)]
pub struct Import {
    /// The directory the labelling tool wrote (as `export` lays it out).
    dir: PathBuf,
    #[arg(long, value_enum)]
    format: LabelFormat,
    /// The data index to append to; images are copied beside it, into `labelled/`.
    #[arg(long)]
    index: PathBuf,
}

impl LabelCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            LabelCommand::Export(e) => {
                let count = labels::export(&e.hard_examples, &e.out, e.format, &e.classes)?;
                println!("exported {count} hard examples to {}", e.out.display());
                Ok(ExitCode::SUCCESS)
            }
            LabelCommand::Import(i) => {
                let imported = labels::import(&i.dir, i.format, &i.index)?;
                for reject in &imported.rejects {
                    eprintln!("rejected: {reject}");
                }
                println!(
                    "appended {} samples to {}; {} labels rejected",
                    imported.samples,
                    i.index.display(),
                    imported.rejects.len()
                );
                Ok(if imported.rejects.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
        }
    }
}
