//! Human tables and JSON output for list and show commands.

use serde::Serialize;

/// Prints rows as aligned columns under a header.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub(crate) fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `text` on one line, cut to `most` characters with an ellipsis: a table cell.
pub(crate) fn clip(text: &str, most: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(most) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

/// A size for people: bytes, KiB, MiB or GiB with one decimal.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Runs `write` on the file `output`, or on standard output when there is none. The file
/// appears only once all of it is written and flushed (it is written beside it, as
/// `<name>.partial`, then renamed): a failed write leaves no file.
pub(crate) async fn write_whole<T, E: Into<anyhow::Error>>(
    output: Option<&std::path::Path>,
    write: impl AsyncFnOnce(&mut dyn std::io::Write) -> Result<T, E>,
) -> anyhow::Result<T> {
    use anyhow::Context as _;
    use std::io::Write as _;
    let Some(path) = output else {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let done = write(&mut out).await.map_err(Into::into)?;
        out.flush().context("cannot write to standard output")?;
        return Ok(done);
    };
    let partial = path.with_extension("partial");
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let written = match write(&mut out).await {
        Ok(done) => out
            .flush()
            .with_context(|| format!("cannot write {}", partial.display()))
            .map(|()| done),
        Err(err) => Err(err.into()),
    };
    drop(out);
    let renamed = written.and_then(|done| {
        std::fs::rename(&partial, path)
            .with_context(|| format!("cannot write {}", path.display()))
            .map(|()| done)
    });
    if renamed.is_err() {
        std::fs::remove_file(&partial).ok();
    }
    renamed
}

/// One line of a long operation's progress on standard error: redrawn in place on a terminal,
/// written as a line of its own elsewhere (a log, a pipe), where `\r` would run them together.
pub(crate) fn progress(text: &str) {
    use std::io::IsTerminal as _;
    if std::io::stderr().is_terminal() {
        eprint!("\r{text}\x1b[K");
    } else {
        eprintln!("{text}");
    }
}

/// Ends the lines [`progress`] redrew on a terminal.
pub(crate) fn progress_end() {
    use std::io::IsTerminal as _;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}
