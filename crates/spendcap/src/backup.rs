//! `spendcap backup` and `spendcap restore`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use crate::cli::Conn;

#[derive(Args)]
pub struct BackupArgs {
    /// Where to write the backup.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long)]
    from: PathBuf,
    /// The new node's (empty) data directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// The new node's id.
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// The new cluster's members, as for `serve --initial-members`; every
    /// node of the new cluster is restored with the same list. Default: a
    /// single node at 127.0.0.1:7701/127.0.0.1:7700.
    #[arg(long, default_value = "")]
    initial_members: String,
}

#[derive(Serialize)]
struct Summary {
    file: String,
    bytes: u64,
    snapshot_id: String,
    last_log_index: Option<u64>,
    state_records: u64,
    history_records: u64,
    digest: String,
}

fn summary(file: &std::path::Path, s: storage::BackupSummary) -> anyhow::Result<Summary> {
    Ok(Summary {
        file: file.display().to_string(),
        bytes: std::fs::metadata(file)?.len(),
        snapshot_id: s.snapshot_id,
        last_log_index: s.last_log_id.map(|l| l.index),
        state_records: s.state_records,
        history_records: s.history_records,
        digest: hex::encode(s.digest),
    })
}

pub async fn backup(a: BackupArgs) -> anyhow::Result<()> {
    let client = a.conn.client()?;
    if a.out.exists() {
        bail!("{} exists; not overwriting a backup", a.out.display());
    }
    let tmp = a.out.with_extension("partial");
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?);
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("backup {bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let written = client
        .backup_to(&mut file, |done, total| {
            if let Some(t) = total {
                bar.set_length(t);
            }
            bar.set_position(done);
        })
        .await;
    bar.finish_and_clear();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    file.flush()?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    // Check what arrived before calling it a backup.
    let s = storage::inspect_backup(&tmp).context("the downloaded backup does not verify")?;
    std::fs::rename(&tmp, &a.out)?;
    println!("{}", serde_json::to_string_pretty(&summary(&a.out, s)?)?);
    Ok(())
}

pub fn restore(a: RestoreArgs) -> anyhow::Result<()> {
    let members = if a.initial_members.is_empty() {
        node::parse_members(&format!("{}=127.0.0.1:7701/127.0.0.1:7700", a.id))?
    } else {
        node::parse_members(&a.initial_members).context("--initial-members")?
    };
    let s = storage::restore_backup(&a.from, &a.data_dir, a.id, members)
        .with_context(|| format!("restoring {} into {}", a.from.display(), a.data_dir.display()))?;
    println!("{}", serde_json::to_string_pretty(&summary(&a.from, s)?)?);
    eprintln!(
        "spendcap: restored node {} in {}; start it with `spendcap serve --id {} --data-dir {} ...` \
         and the same members on every node",
        a.id,
        a.data_dir.display(),
        a.id,
        a.data_dir.display()
    );
    Ok(())
}
