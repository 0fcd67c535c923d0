//! What `sekisho check` prints for broken configs, byte for byte: each `tests/check-errors/X.yaml`
//! is checked and its output (stdout and stderr as one stream, then `exit N`) compared with
//! `X.out`. A change to a message is then a visible change to a `.out` file:
//! `SEKISHO_BLESS=1 cargo test --test check_messages` rewrites them for review. A case whose
//! first line is `# args: ...` is checked with those arguments after `check -c X.yaml`
//! (e.g. `# args: --strict`).

use std::path::Path;
use std::process::Command;

#[test]
fn check_prints_what_it_always_printed_for_each_broken_config() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check-errors");
    let bless = std::env::var_os("SEKISHO_BLESS").is_some();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/check-errors")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "too few cases: {names:?}");
    let mut differ = Vec::new();
    for name in &names {
        let text = std::fs::read_to_string(dir.join(name)).expect("read case");
        let args = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# args:"))
            .unwrap_or("");
        let out = Command::new("sh")
            .arg("-c")
            .arg("f=$1; shift; \"$0\" check -c \"$f\" \"$@\" 2>&1; echo \"exit $?\"")
            .arg(env!("CARGO_BIN_EXE_sekisho"))
            .arg(name)
            .args(args.split_whitespace())
            .current_dir(&dir)
            .env_remove("STATE_DIRECTORY")
            .env_remove("LOGS_DIRECTORY")
            .output()
            .expect("sh runs");
        let got = String::from_utf8_lossy(&out.stdout).into_owned();
        let expected_path = dir.join(name.replace(".yaml", ".out"));
        if bless {
            std::fs::write(&expected_path, &got).expect("write .out");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        if got != expected {
            differ.push(format!(
                "--- {name}: expected\n{expected}--- {name}: got\n{got}"
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

#[test]
fn a_config_that_cannot_be_read_is_one_line_without_a_position() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check-errors");
    for (command, expected) in [
        (
            "check",
            "sekisho: cannot read the config nope.yaml: No such file or directory (os error 2)\nexit 1\n",
        ),
        (
            "run",
            "sekisho: not started: cannot read the config nope.yaml: No such file or directory (os error 2)\nexit 1\n",
        ),
    ] {
        let out = Command::new("sh")
            .arg("-c")
            .arg("\"$0\" \"$1\" -c nope.yaml 2>&1; echo \"exit $?\"")
            .arg(env!("CARGO_BIN_EXE_sekisho"))
            .arg(command)
            .current_dir(&dir)
            .output()
            .expect("sh runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{command}");
    }
}

#[test]
fn a_log_filter_that_is_not_one_stops_the_start() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check-errors");
    let out = Command::new("sh")
        .arg("-c")
        .arg("\"$0\" check -c noups.yaml 2>&1; echo \"exit $?\"")
        .arg(env!("CARGO_BIN_EXE_sekisho"))
        .current_dir(&dir)
        .env("SEKISHO_LOG", "verbose")
        .output()
        .expect("sh runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "sekisho: SEKISHO_LOG=\"verbose\" is not a log filter (e.g. info, sekisho=debug,warn): \"verbose\" is not a level (trace, debug, info, warn, error, off); for a target write verbose=LEVEL\nexit 2\n"
    );
}

#[test]
fn a_default_state_file_in_a_folder_that_is_not_there_is_an_error_without_a_position() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check-errors");
    let out = Command::new("sh")
        .arg("-c")
        .arg("\"$0\" check -c values.yaml 2>&1 | head -1")
        .arg(env!("CARGO_BIN_EXE_sekisho"))
        .current_dir(&dir)
        .env("STATE_DIRECTORY", "/nonexistent/sekisho")
        .output()
        .expect("sh runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "values.yaml: bans.state_file: the default state file /nonexistent/sekisho/sekisho-bans.json ($STATE_DIRECTORY) cannot be saved: the folder /nonexistent/sekisho does not exist; give bans.state_file, or off\n"
    );
}
