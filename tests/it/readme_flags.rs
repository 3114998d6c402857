//! The README's flag tables must match `--help`: every flag of a subcommand is documented with
//! its env name, and the README documents no flag that does not exist.

use std::collections::BTreeMap;

use altimage::cli::Cli;
use clap::CommandFactory;

/// `--flag` → env name, from the clap definition of one subcommand (global flags included).
fn flags_of(subcommand: &str) -> BTreeMap<String, String> {
    let mut cli = Cli::command();
    cli.build();
    let command = cli
        .find_subcommand(subcommand)
        .unwrap_or_else(|| panic!("no subcommand {subcommand}"));
    command
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            if long == "help" || long == "version" {
                return None;
            }
            let env = arg
                .get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            Some((format!("--{long}"), env))
        })
        .collect()
}

/// Rows of the README table that follows the given heading: `--flag` → env name.
fn readme_table(heading: &str) -> BTreeMap<String, String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("README has no `{heading}`"));
    section
        .lines()
        .skip_while(|l| !l.starts_with("| option"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line
                .split(" | ")
                .map(|c| c.trim_matches(|ch| ch == '|' || ch == ' '))
                .collect();
            let flag = cells[0]
                .trim_matches('`')
                .split([' ', ','])
                .next()
                .unwrap()
                .to_string();
            let env = cells[1].trim_matches('`').to_string();
            (flag, env)
        })
        .collect()
}

/// Asserts that the README table under `heading` documents exactly the flags of `subcommand`,
/// each with an ALTIMAGE_ env name.
fn assert_readme_matches_help(subcommand: &str, heading: &str) {
    let code = flags_of(subcommand);
    let readme = readme_table(heading);
    assert_eq!(
        readme, code,
        "README table (left) vs `altimage {subcommand} --help` (right)"
    );
    assert!(
        code.values().all(|env| env.starts_with("ALTIMAGE_")),
        "every flag has an ALTIMAGE_ env name: {code:?}"
    );
}

#[test]
fn describe_flags_in_the_readme_match_help() {
    assert_readme_matches_help("describe", "## Describe a catalogue folder");
}

#[test]
fn serve_flags_in_the_readme_match_help() {
    assert_readme_matches_help("serve", "## Serve the API");
}
