//! The user's first hour, checked: every `occy` command shown in the README
//! and in `docs/` runs and succeeds against a test registry; the command
//! reference (`docs/commands.md`) is the current `--help`; `occy --help` fits
//! on one screen and names every global flag; every command has an example;
//! completions and man pages are generated; user-facing errors name what is
//! wrong and say how to fix it.
//!
//! How documentation commands are run: every line starting with `occy` (or
//! `mkdir -p`) in a ```sh block (a trailing `\` continues it) runs with `sh -c`, in the order
//! of the file, in a directory of its own holding `mirror.yaml` (the sync
//! file of docs/getting-started.md). Hosts the docs use (127.0.0.1:5000,
//! registry.example.com, mirror.example.com) become the test registry, which
//! holds the images the docs name; quay.io's API is a local stand-in; `/tmp/`,
//! `/srv/` and `~/` move under a scratch directory; `examples/` is the
//! repository's. Blocks marked ```text are shown, not run.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;
use clap::CommandFactory;

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `(line number, command)` of every `occy` (and `mkdir -p`) line in the file's ```sh blocks.
fn doc_commands(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = Vec::new();
    let mut in_sh = None::<bool>;
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            in_sh = match in_sh {
                Some(_) => None,
                None => Some(matches!(lang.trim(), "sh" | "bash" | "shell")),
            };
            continue;
        }
        if in_sh != Some(true) {
            continue;
        }
        let line = line.trim();
        if let Some((n, mut cmd)) = pending.take() {
            cmd.push(' ');
            cmd.push_str(line.trim_end_matches('\\').trim());
            if line.ends_with('\\') {
                pending = Some((n, cmd));
            } else {
                out.push((n, cmd));
            }
            continue;
        }
        let line = line.strip_prefix("$ ").unwrap_or(line);
        if line.starts_with("occy ") || line.starts_with("mkdir -p ") {
            if line.ends_with('\\') {
                pending = Some((i + 1, line.trim_end_matches('\\').trim().to_string()));
            } else {
                out.push((i + 1, line.to_string()));
            }
        }
    }
    out
}

/// The docs' sync file: the first ```yaml block of getting-started.md.
fn getting_started_sync_file() -> String {
    let text = std::fs::read_to_string(repo_root().join("docs/getting-started.md")).unwrap();
    let start = text.find("```yaml\n").expect("a yaml block in getting-started.md") + 8;
    let end = start + text[start..].find("```").unwrap();
    text[start..end].to_string()
}

struct World {
    reg: Registry,
    quay: String,
}

impl World {
    /// The registry, holding every image the docs name.
    fn new() -> World {
        let reg = Registry::start(Mode::Plain);
        let standard = &standard_images().0;
        for (image, repo_tag) in [
            ("multiarch", "app:1.0"),
            ("app-a", "library/busybox:latest"),
            ("app-a", "apps/web:v1"),
            ("app-b", "apps/web:v1.1"),
            ("app-a", "projectquay/web:latest"),
            ("app-b", "projectquay/web:v1.0"),
            ("app-b", "projectquay/api:latest"),
        ] {
            reg.push_layout(standard, image, repo_tag);
        }
        let quickstart = repo_root().join("examples/quickstart/image");
        reg.push_layout(&quickstart, "1.0", "demo/hello:1.0");
        World {
            reg,
            quay: fake_quay_api(),
        }
    }

    /// Rewrites a documented command for the test world rooted at `root`.
    fn rewrite(&self, cmd: &str, root: &Path, home: &Path) -> String {
        let root = root.display().to_string();
        // The repository's own path goes in last: it may itself be under /tmp/.
        cmd.replace("127.0.0.1:5000", &self.reg.host)
            .replace("registry.example.com", &self.reg.host)
            .replace("mirror.example.com", &self.reg.host)
            .replace("/config/mirror.yaml", "mirror.yaml")
            .replace("${{ matrix.shard }}", "1/4")
            .replace("/tmp/", &format!("{root}/tmp/"))
            .replace("/srv/", &format!("{root}/srv/"))
            .replace("~/", &format!("{}/", home.display()))
            .replace("//examples/", &format!("//{}/examples/", repo_root().display()))
    }

    /// Runs every command of `doc` in order; returns how many ran.
    fn run_doc(&self, doc: &Path) -> usize {
        let name = doc.file_name().unwrap().to_string_lossy().to_string();
        let root = scratch_dir(&format!("doc-{name}"));
        let home = root.join("home");
        // The home is fresh: the docs create the directories they write into.
        for d in ["tmp", "srv/layouts", "srv/airgap", "cwd", "home"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let cwd = root.join("cwd");
        let sync_file = self.rewrite(&getting_started_sync_file(), &root, &home);
        std::fs::write(cwd.join("mirror.yaml"), sync_file).unwrap();
        let bin_dir = Path::new(occy_bin()).parent().unwrap().to_path_buf();
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        let commands = doc_commands(doc);
        for (line, documented) in &commands {
            let cmd = self.rewrite(documented, &root, &home);
            let out = Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .current_dir(&cwd)
                .env("PATH", &path)
                .env("HOME", &home)
                .env("NO_COLOR", "1")
                .env("OCCY_INSECURE_REGISTRY", &self.reg.host)
                .env("OCCY_QUAY_API", &self.quay)
                .env("OCCY_QUAY_REGISTRY", &self.reg.host)
                .env("OCCY_CACHE_DIR", root.join("cache"))
                .env("JOB_COMPLETION_INDEX", "1")
                .env_remove("REGISTRY_AUTH_FILE")
                .env_remove("DOCKER_CONFIG")
                .output()
                .unwrap();
            let code = out.status.code();
            let fine = code == Some(0) || (documented.contains("--detailed-exitcode") && code == Some(3));
            assert!(
                fine,
                "{name}:{line}: `{documented}` exited {code:?}\nran: {cmd}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        commands.len()
    }
}

#[test]
fn every_documented_command_runs() {
    let world = World::new();
    let mut docs = vec![repo_root().join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(repo_root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    let mut ran = 0;
    for doc in &docs {
        ran += world.run_doc(doc);
    }
    assert!(ran >= 40, "only {ran} documented commands found");
    // The getting-started walk-through left its mirror in place.
    let tags = world.reg.skopeo(
        &["list-tags", &format!("docker://{}/mirror/hello", world.reg.host)],
        false,
    );
    assert!(String::from_utf8_lossy(&tags.stdout).contains("1.0"));
}

/// README.md and docs/*.md.
fn markdown_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files.insert(0, repo_root().join("README.md"));
    files
}

/// `(line number, line)` of a Markdown file outside its fenced code blocks.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// The targets of the inline links `[text](target)` on a line.
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        let end = rest.find(')').unwrap_or(rest.len());
        out.push(rest[..end].trim().to_string());
        rest = &rest[end..];
    }
    out
}

/// Whether `path` (made of `..` and names, not touching the disk) stays in the repository.
fn inside_repository(from_dir: &Path, target: &str) -> bool {
    let mut parts: Vec<String> = from_dir
        .strip_prefix(repo_root())
        .unwrap()
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return false;
                }
            }
            name => parts.push(name.to_string()),
        }
    }
    true
}

/// The README opens with the one `# occy` title, no heading appears twice in
/// a document, and the documentation stands on its own: no link or path
/// leaves the repository and every relative link names a file that exists.
#[test]
fn readme_and_docs_have_one_title_and_links_that_resolve() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let headings: Vec<&str> = prose_lines(&readme)
        .into_iter()
        .map(|(_, l)| l)
        .filter(|l| l.starts_with('#'))
        .collect();
    let titles: Vec<&&str> = headings.iter().filter(|h| h.starts_with("# ")).collect();
    assert_eq!(
        titles.len(),
        1,
        "README.md has {} `# ` titles: {titles:?}",
        titles.len()
    );
    assert_eq!(
        headings.first().copied(),
        Some("# occy"),
        "the first heading of README.md must be `# occy`"
    );

    let mut problems = Vec::new();
    for file in markdown_files() {
        let name = file.strip_prefix(repo_root()).unwrap().display().to_string();
        let dir = file.parent().unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let mut seen = std::collections::HashMap::new();
        for (n, line) in prose_lines(&text) {
            if line.starts_with('#') {
                if let Some(first) = seen.insert(line.trim().to_string(), n) {
                    problems.push(format!("{name}:{n}: heading {line:?} already at line {first}"));
                }
            }
            // Any relative path, linked or quoted, must stay in the repository.
            for (i, _) in line.match_indices("../") {
                if i > 0 && line[..i].ends_with("..") {
                    continue;
                }
                let token: String = line[i..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && !"`)]\"'>".contains(*c))
                    .collect();
                if !inside_repository(dir, &token) {
                    problems.push(format!("{name}:{n}: {token} is outside the repository"));
                }
            }
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") || target.starts_with('#') {
                    continue;
                }
                let path = target.split('#').next().unwrap_or_default();
                if path.starts_with('/') || !inside_repository(dir, path) {
                    problems.push(format!("{name}:{n}: link {target} leaves the repository"));
                } else if !dir.join(path).exists() {
                    problems.push(format!("{name}:{n}: link {target}: no such file"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// occy with an empty environment (no OCCY_* variables leaking into help).
fn occy_clean(args: &[&str]) -> std::process::Output {
    Command::new(occy_bin())
        .args(args)
        .env_clear()
        .env("HOME", scratch())
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap()
}

#[test]
fn the_command_reference_is_current() {
    let out = occy_clean(&["man", "--markdown"]);
    assert!(out.status.success());
    let now = String::from_utf8(out.stdout).unwrap();
    let file = std::fs::read_to_string(repo_root().join("docs/commands.md")).unwrap();
    assert!(
        now == file,
        "docs/commands.md is stale: run `occy man --markdown > docs/commands.md`"
    );
}

#[test]
fn help_fits_on_one_screen_and_names_every_global_flag() {
    let out = occy_clean(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let lines = help.lines().count();
    assert!(lines <= 40, "occy --help is {lines} lines:\n{help}");
    assert!(help.lines().all(|l| l.chars().count() <= 100), "{help}");
    let cmd = occy::cli::Cli::command();
    for arg in cmd.get_arguments().filter(|a| a.is_global_set()) {
        let long = format!("--{}", arg.get_long().unwrap());
        assert!(help.contains(&long), "{long} missing from occy --help");
        if let Some(env) = arg.get_env() {
            let env = env.to_string_lossy();
            assert!(help.contains(&*env), "{env} ({long}) missing from occy --help");
        }
    }
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = sub.get_name();
        assert!(help.contains(&format!("  {name} ")), "{name} missing from occy --help");
        let out = occy_clean(&[name, "--help"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Example"), "occy {name} --help has no example:\n{text}");
    }
}

/// `occy sync -h` and `occy process -h` show the command's own flags and one
/// line pointing to `occy --help` for the global ones; `--help` lists them
/// under their own heading.
#[test]
fn command_short_help_leaves_global_flags_to_occy_help() {
    let cmd = occy::cli::Cli::command();
    let globals: Vec<(String, Option<char>)> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .map(|a| (format!("--{}", a.get_long().unwrap()), a.get_short()))
        .collect();
    assert!(globals.len() >= 10, "{globals:?}");
    for name in ["sync", "process", "info", "search", "check"] {
        let out = occy_clean(&[name, "-h"]);
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        let lines = help.lines().count();
        assert!(lines < 40, "occy {name} -h is {lines} lines:\n{help}");
        for (long, short) in &globals {
            assert!(
                !help.contains(long.as_str()),
                "occy {name} -h shows the global {long}:\n{help}"
            );
            if let Some(c) = short {
                assert!(
                    !help.contains(&format!("-{c},")),
                    "occy {name} -h shows the global -{c}:\n{help}"
                );
            }
        }
        let last = help.trim_end().lines().last().unwrap_or_default();
        assert!(
            last.starts_with("Global options") && last.ends_with("occy --help"),
            "occy {name} -h should end pointing to occy --help:\n{help}"
        );
        let long_help = String::from_utf8(occy_clean(&[name, "--help"]).stdout).unwrap();
        let section = long_help
            .split_once("\nGlobal options:\n")
            .unwrap_or_else(|| panic!("occy {name} --help has no Global options section:\n{long_help}"))
            .1;
        for (long, _) in &globals {
            assert!(section.contains(long.as_str()), "occy {name} --help lacks {long}");
        }
    }
}

/// Lists of URI schemes in help come from the one table in src/reference.rs.
#[test]
fn process_help_lists_every_scheme() {
    let help = String::from_utf8(occy_clean(&["process", "--help"]).stdout).unwrap();
    for s in occy::reference::SCHEMES {
        assert!(
            help.contains(&format!("{}://", s.name)),
            "{}:// missing from occy process --help:\n{help}",
            s.name
        );
    }
    let (source, destination) = help.split_once("\n  <DESTINATION>").unwrap();
    assert!(source.contains("docker://") && source.contains("quay://"), "{help}");
    assert!(
        destination.contains("bundle://") && destination.contains("docker://"),
        "{help}"
    );
}

/// `occy info` prints every runtime setting the config has (Healthcheck and
/// StopSignal included) and no header for one it lacks or leaves empty.
#[test]
fn info_prints_each_runtime_setting_the_config_has() {
    use crate::support::layout_edit::{layout_of, mutate};
    let dir = layout_of("app-a");
    mutate(&dir, "app-a", |_, _, config| {
        let c = &mut config["config"];
        c["Labels"] = serde_json::json!({});
        c["StopSignal"] = "SIGQUIT".into();
        c["Healthcheck"] = serde_json::json!({
            "Test": ["CMD-SHELL", "wget -q -O- http://localhost:8080/ || exit 1"],
            "Interval": 30_000_000_000u64,
            "Timeout": 3_000_000_000u64,
            "Retries": 3
        });
        c["Shell"] = serde_json::json!(["/bin/ash", "-eo", "pipefail", "-c"]);
        c["OnBuild"] = serde_json::Value::Null;
        c["User"] = "".into();
        c["ExposedPorts"] = serde_json::json!({"8080/tcp": {}});
    });
    let image = format!("oci://{}:app-a", dir.display());
    let text = String::from_utf8(ok(&["info", &image]).stdout).unwrap();
    for want in [
        "Stop signal:       SIGQUIT",
        "Healthcheck:       CMD-SHELL wget -q -O- http://localhost:8080/ || exit 1 (interval 30s, timeout 3s, retries 3)",
        "Shell:             [\"/bin/ash\",\"-eo\",\"pipefail\",\"-c\"]",
        "Exposed ports:     8080/tcp",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    for absent in ["Labels", "OnBuild", "User:", "Volumes:", "Entrypoint:"] {
        assert!(
            !text.contains(absent),
            "{absent} shown though the config has none:\n{text}"
        );
    }
    // No header without content: every `Name:` line has a value or lines under it.
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_end().ends_with(':') {
            let next = lines.get(i + 1).copied().unwrap_or_default();
            assert!(next.starts_with("  "), "empty header {line:?} in:\n{text}");
        }
        assert!(!line.trim_end().ends_with(": -"), "a field with no value: {line:?}");
    }
    let json = json_of(&ok(&["-O", "json", "info", &image]));
    assert_eq!(json["stop_signal"], "SIGQUIT");
    assert_eq!(json["healthcheck"]["Retries"], 3);
    assert_eq!(json["shell"][0], "/bin/ash");
}

/// Sync-file errors keep file, line, column, text and hint to the output:
/// `-O json` prints them as objects, `-O github` as workflow annotations;
/// the exit code stays 2 and stderr keeps the drawing for people.
#[test]
fn sync_file_errors_reach_json_and_github_annotations() {
    let dir = scratch_dir("annotations");
    // Two problems found together, and a misspelt key with a hint.
    std::fs::write(
        dir.join("bad.yaml"),
        "version: 1\nsync:\n  - from: nope://a\n    to: oci:///b\n  - from: oci:///a\n    to: oci:///c\n    platforms: [linux]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("typo.yaml"),
        "version: 1\nsync:\n  - from: oci:///a\n    tag: [x]\n    to: oci:///b\n",
    )
    .unwrap();
    let run = |format: &str, file: &str, place: &str| {
        let out = Command::new(occy_bin())
            .args(["-O", format, "sync", file, "--plan"])
            .current_dir(&dir)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "-O {format}: {stderr}");
        assert!(stderr.contains(place), "people still get {place}: {stderr}");
        String::from_utf8(out.stdout).unwrap()
    };

    let json: serde_json::Value = serde_json::from_str(&run("json", "bad.yaml", "bad.yaml:3:11:")).unwrap();
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{json}");
    let scheme = &errors[0];
    assert_eq!(scheme["file"], "bad.yaml");
    assert_eq!(
        (scheme["line"].as_u64(), scheme["column"].as_u64()),
        (Some(3), Some(11))
    );
    assert_eq!(scheme["text"], "nope://a");
    assert!(
        scheme["message"].as_str().unwrap().contains("unknown scheme \"nope\""),
        "{json}"
    );
    let platform = &errors[1];
    assert_eq!(
        (platform["line"].as_u64(), platform["column"].as_u64()),
        (Some(7), Some(17))
    );
    assert_eq!(platform["text"], "linux");
    assert!(platform["hint"].as_str().unwrap().contains("linux/amd64"), "{json}");
    let json: serde_json::Value = serde_json::from_str(&run("json", "typo.yaml", "typo.yaml:4:5:")).unwrap();
    let key = &json["errors"][0];
    assert_eq!(
        (key["file"].as_str(), key["line"].as_u64(), key["column"].as_u64()),
        (Some("typo.yaml"), Some(4), Some(5))
    );
    assert_eq!(key["text"], "tag");
    assert_eq!(key["hint"], "did you mean `tags`?");

    let github = run("github", "bad.yaml", "bad.yaml:7:17:");
    let lines: Vec<&str> = github.lines().collect();
    assert_eq!(lines.len(), 2, "{github}");
    assert!(
        lines[0].starts_with("::error file=bad.yaml,line=3,col=11,") && lines[0].contains("::unknown scheme"),
        "{github}"
    );
    assert!(lines[1].starts_with("::error file=bad.yaml,line=7,col=17,"), "{github}");
    let github = run("github", "typo.yaml", "typo.yaml:4:5:");
    assert_eq!(
        github,
        "::error file=typo.yaml,line=4,col=5,endLine=4,endColumn=8::unknown key `tag` in `sync[0]`%0Ahelp: did you mean `tags`?\n"
    );
}

/// A plan with nothing to do is one line, without an all-zero "Per
/// destination" block.
#[test]
fn a_no_op_plan_says_nothing_to_do_in_one_line() {
    let dir = scratch_dir("no-op-plan");
    let file = dir.join("m.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\nsync:\n  - from: {}\n    to:\n      - oci://{}/layout:app-a\n      - tar://{}/app-a.tar\n",
            standard_ref("app-a"),
            dir.display(),
            dir.display()
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let first = String::from_utf8(ok(&["sync", file, "--plan"]).stdout).unwrap();
    assert!(
        first.contains("Per destination:") && !first.contains("Nothing to do"),
        "{first}"
    );
    ok(&["sync", file]);
    let again = String::from_utf8(ok(&["sync", file, "--plan"]).stdout).unwrap();
    assert!(!again.contains("Per destination"), "{again}");
    assert_eq!(
        again.lines().last(),
        Some("Nothing to do: 2 targets up to date."),
        "{again}"
    );
    assert!(again.lines().count() <= 2, "{again}");
    assert_oci_layout_readable(&dir.join("layout"), "app-a", true);
}

#[test]
fn version_names_the_commit() {
    let out = occy_clean(&["--version"]);
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(
        v.starts_with(&format!("occy {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
}

#[test]
fn completions_and_man_pages_are_generated() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = occy_clean(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("sync") && text.contains("insecure-registry"), "{shell}");
    }
    let out = occy_clean(&["man"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH occy 1"));
    let dir = scratch_dir("man");
    let out = occy_clean(&["man", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success());
    for page in ["occy.1", "occy-sync.1", "occy-process.1", "occy-check.1"] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap();
        assert!(text.contains(".SH"), "{page}");
    }
    if have("man") {
        let out = Command::new("man")
            .arg("-l")
            .arg(dir.join("occy-sync.1"))
            .env("MANPAGER", "cat")
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("sync"));
    }
}

/// One example of each user-facing error: the exit code, the offending
/// thing the message must name, and words of the fix it must suggest.
#[test]
fn errors_name_the_problem_and_suggest_a_fix() {
    let layout = standard_images().0.display().to_string();
    let img = format!("oci://{layout}:app-a");
    let dir = scratch_dir("errors");
    let tar = format!("tar://{}/x.tar", dir.display());
    let not_tar = dir.join("not.tar");
    std::fs::write(&not_tar, "root:x:0:0:root:/root:/bin/bash\n".repeat(20)).unwrap();
    let bad_yaml = dir.join("bad.yaml");
    std::fs::write(
        &bad_yaml,
        "version: 1\nsync:\n  - from: oci:///a\n    tag: [x]\n    to: oci:///b\n",
    )
    .unwrap();
    let port = free_port();
    let closed = format!("registry://127.0.0.1:{port}/x:1");
    let cases: Vec<(Vec<String>, i32, &str, &str)> = vec![
        (vec!["info".into(), "foo://x".into()], 2, "\"foo\"", "expected one of"),
        (
            vec!["info".into(), "tar:///nonexistent/x.tar".into()],
            1,
            "/nonexistent/x.tar",
            "check the path",
        ),
        (
            vec!["info".into(), "oci:///nonexistent/l:1".into()],
            1,
            "/nonexistent/l",
            "check the path",
        ),
        (
            vec!["info".into(), format!("oci://{layout}:nosuchtag")],
            1,
            "nosuchtag",
            "it has:",
        ),
        (
            vec!["info".into(), format!("tar://{}", not_tar.display())],
            1,
            "not.tar",
            "expects a docker-save archive",
        ),
        (
            vec!["info".into(), closed.clone()],
            1,
            &closed[11..26],
            "is a registry running there",
        ),
        (
            vec!["info".into(), img.clone(), "--platform".into(), "linux".into()],
            2,
            "\"linux\"",
            "e.g. linux/amd64",
        ),
        (
            vec!["info".into(), format!("dir://{}?bogus=1", dir.display())],
            2,
            "\"bogus\"",
            "accepts unique_names",
        ),
        (
            vec!["info".into(), "docker://x:1?socket=/nonexistent".into()],
            1,
            "/nonexistent",
            "DOCKER_HOST",
        ),
        (
            vec!["process".into(), img.clone(), tar.clone(), "-f".into(), "nosuch".into()],
            2,
            "\"nosuch\"",
            "filters are",
        ),
        (
            vec![
                "process".into(),
                img.clone(),
                tar.clone(),
                "-f".into(),
                "exclude:patern=x".into(),
            ],
            2,
            "\"patern\"",
            "it takes pattern",
        ),
        (
            vec![
                "process".into(),
                img.clone(),
                format!("tar://{}/dir/x.tar", not_tar.display()),
            ],
            1,
            "not.tar/dir",
            "cannot create its directory",
        ),
        (
            vec!["process".into(), img.clone(), img.clone()],
            2,
            "app-a",
            "source and destination are the same",
        ),
        (
            vec!["process".into(), "registry://h/a/*:v1".into(), tar.clone()],
            2,
            "x.tar",
            "{name}-{tag}",
        ),
        (
            vec![
                "--compression".into(),
                "lz4".into(),
                "process".into(),
                img.clone(),
                tar.clone(),
                "-f".into(),
                "normalize-timestamps".into(),
            ],
            2,
            "\"lz4\"",
            "one of gzip, zstd",
        ),
        (
            vec!["search".into(), img.clone(), "[".into(), "--regex".into()],
            2,
            "\"[\"",
            "unclosed character class",
        ),
        (
            vec!["sync".into(), "/nonexistent/mirror.yaml".into()],
            2,
            "/nonexistent/mirror.yaml",
            "examples/",
        ),
        (
            vec!["sync".into(), bad_yaml.display().to_string()],
            2,
            "bad.yaml:4:5",
            "did you mean `tags`",
        ),
        (
            vec![
                "sync".into(),
                bad_yaml.display().to_string(),
                "--shard".into(),
                "5/3".into(),
            ],
            2,
            "shard index 5",
            "0..=2",
        ),
        (
            vec![
                "sync".into(),
                bad_yaml.display().to_string(),
                "--prune".into(),
                "--only".into(),
                "x".into(),
            ],
            2,
            "--prune",
            "cannot be used with",
        ),
    ];
    for (args, code, thing, fix) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stderr = fails(&args, *code, thing);
        assert!(
            stderr.contains(fix),
            "occy {args:?}: no fix suggested ({fix:?}): {stderr}"
        );
        assert!(stderr.lines().count() < 30, "occy {args:?}: too long: {stderr}");
    }
}

#[test]
fn verbose_logs_show_each_request_and_never_a_credential() {
    use base64::Engine as _;
    let reg = Registry::shared(Mode::Basic);
    let url = reg.push_standard("app-a");
    for v in ["-v", "-vv"] {
        let out = reg.occy(&[v, "info", &url]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        for field in [
            "method=GET",
            &format!("host=\"{}\"", reg.host),
            "path=\"/v2/",
            "status=200",
            "elapsed_ms=",
        ] {
            assert!(stderr.contains(field), "{v}: no {field} in {stderr}");
        }
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
        assert!(
            !stderr.contains(PASS) && !stderr.contains(&basic),
            "{v} leaks the password"
        );
        assert!(!stderr.to_lowercase().contains("authorization: "), "{v} logs a header");
    }
}
