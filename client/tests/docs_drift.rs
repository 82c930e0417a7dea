//! The documents cannot drift from the binaries (issue 26): every field that
//! `server --json` and `client --json` print in a real run is in
//! docs/OUTPUTS.md's tables, and every flag of `server --help` and
//! `client --help` is in README.md's usage lines.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

fn repo_file(path: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// One documented field: its name and the text of its row (the nested
/// fields of an object are named in backquotes there).
struct Row {
    name: String,
    meaning: String,
}

/// The table rows of the section of OUTPUTS.md whose heading starts with
/// `heading`, up to the next `## ` heading.
fn table(doc: &str, heading: &str) -> Vec<Row> {
    let start = doc.find(heading).unwrap_or_else(|| panic!("OUTPUTS.md has no {heading}"));
    let rest = &doc[start + heading.len()..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            Row { name: cells[0].trim_matches('`').to_string(), meaning: cells[1..].join("|") }
        })
        .collect()
}

fn is_latency_object(v: &Value) -> bool {
    v.get("p50").is_some() && v.get("mean").is_some()
}

/// Every field of `summary` that `rows` (and, for latency objects, the
/// latency-object paragraph) does not document.
fn undocumented(summary: &Value, rows: &[Row], latency_doc: &str) -> Vec<String> {
    let mut missing = Vec::new();
    let obj = summary.as_object().expect("a JSON object");
    for (key, value) in obj {
        let Some(row) = rows.iter().find(|r| &r.name == key) else {
            missing.push(key.clone());
            continue;
        };
        let check_latency = |path: &str, v: &Value, missing: &mut Vec<String>| {
            for sub in v.as_object().unwrap().keys() {
                if !latency_doc.contains(&format!("`{sub}`")) {
                    missing.push(format!("{path}.{sub} (latency object)"));
                }
            }
        };
        match value {
            v if is_latency_object(v) => check_latency(key, v, &mut missing),
            Value::Object(inner) => {
                for (sub, v) in inner {
                    if !row.meaning.contains(&format!("`{sub}`")) {
                        missing.push(format!("{key}.{sub}"));
                    }
                    if is_latency_object(v) {
                        check_latency(&format!("{key}.{sub}"), v, &mut missing);
                    }
                }
            }
            _ => {}
        }
    }
    missing
}

#[test]
fn every_json_field_of_a_real_run_is_documented_in_outputs_md() {
    let doc = repo_file("docs/OUTPUTS.md");
    let server_rows = table(&doc, "## 3. `server --json`");
    let client_rows = table(&doc, "## 4. `client --json`");
    let latency_doc =
        &doc[doc.find("A **latency object**").expect("the latency object paragraph")..];
    // A short TCP session with two clients: one verifying (the `verify`
    // object), one with the receive pipeline (the `pipeline` object).
    let dir = scratch("docs-drift");
    let book = dir.join("server.book");
    let (server, addr) = spawn_server(&args(&[
        "--transport",
        "tcp",
        "--listen",
        "127.0.0.1:0",
        "--rate",
        "20000",
        "--seed",
        "7",
        "--messages",
        "2000",
        "--wait-clients",
        "2",
        "--linger",
        "300ms",
        "--stats-interval",
        "0",
        "--json",
        "--book-out",
        book.to_str().unwrap(),
    ]));
    let addr = addr.to_string();
    let client = |extra: &[&str]| {
        let mut a = args(&["--transport", "tcp", "--connect", &addr, "--quiet", "--json"]);
        a.extend(args(extra));
        spawn_client(&a)
    };
    let verifying = client(&["--verify", "7"]);
    let piped = client(&["--threads", "pipeline"]);
    let s = finish(server, "server", Duration::from_secs(60));
    let c1 = finish(verifying, "verifying client", Duration::from_secs(60));
    let c2 = finish(piped, "pipeline client", Duration::from_secs(60));
    assert_eq!(u(&c1, "last_seq"), 2000, "{c1}");
    assert!(c1["verify"].is_object() && c2["pipeline"].is_object(), "{c1} {c2}");

    let mut missing: Vec<String> = undocumented(&s, &server_rows, latency_doc)
        .into_iter()
        .map(|f| format!("server {f}"))
        .collect();
    let mut client_missing = BTreeSet::new();
    for c in [&c1, &c2] {
        client_missing.extend(undocumented(c, &client_rows, latency_doc));
    }
    missing.extend(client_missing.into_iter().map(|f| format!("client {f}")));
    assert!(missing.is_empty(), "--json fields missing from docs/OUTPUTS.md: {missing:?}");

    // And nothing documented that the binaries no longer print.
    let printed = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>();
    // A field documented as printed only with a flag ("absent otherwise":
    // `replay`, `record`) is not expected from this run.
    let stale = |rows: &[Row], printed: &BTreeSet<String>| {
        rows.iter()
            .filter(|r| !printed.contains(&r.name) && !r.meaning.contains("absent otherwise"))
            .map(|r| r.name.clone())
            .collect::<Vec<_>>()
    };
    let client_printed: BTreeSet<String> = printed(&c1).union(&printed(&c2)).cloned().collect();
    assert_eq!(stale(&server_rows, &printed(&s)), Vec::<String>::new(), "server rows no field has");
    assert_eq!(
        stale(&client_rows, &client_printed),
        Vec::<String>::new(),
        "client rows no field has"
    );
}

/// The flags (`--name`) in `text`.
fn flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("--") {
        let name: String = text[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        if !name.is_empty() {
            out.insert(format!("--{name}"));
        }
    }
    out
}

/// README.md's usage lines of `binary` (the `## Usage` block's paragraph
/// that starts with the binary's name).
fn usage_lines(readme: &str, binary: &str) -> String {
    let start = readme.find("## Usage").expect("README.md has a ## Usage section");
    let block = &readme[start..];
    let block = &block[block.find("```text").expect("a text block") + 7..];
    let block = &block[..block.find("```").unwrap()];
    let from =
        block.find(&format!("\n{binary} ")).unwrap_or_else(|| panic!("no usage line for {binary}"));
    let para = &block[from + 1..];
    para[..para.find("\n\n").unwrap_or(para.len())].to_string()
}

#[test]
fn every_flag_of_help_is_in_the_readme_usage_lines() {
    let readme = repo_file("README.md");
    let mut missing = Vec::new();
    for (name, bin) in [("server", server_bin()), ("client", client_bin())] {
        let out = Command::new(&bin).arg("--help").output().unwrap();
        assert!(out.status.success(), "{name} --help failed");
        // The options clap lists, one a line: `  -h, --help` or `      --name <X>`.
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let listed: String = text
            .lines()
            .filter_map(|l| {
                let l = l.trim_start();
                let l =
                    if l.len() > 4 && l.starts_with('-') && &l[2..4] == ", " { &l[4..] } else { l };
                l.starts_with("--").then(|| l.split_whitespace().next().unwrap().to_string())
            })
            .collect::<Vec<_>>()
            .join(" ");
        let help = flags(&listed);
        let usage = flags(&usage_lines(&readme, name));
        for f in help {
            if f != "--help" && f != "--version" && !usage.contains(&f) {
                missing.push(format!("{name} {f}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "flags of --help missing from README.md's usage lines: {missing:?}"
    );
}
