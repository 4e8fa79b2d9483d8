//! The reference's table of commands is `fusou --help`'s list.

use std::process::Command;

#[test]
fn the_reference_lists_exactly_the_commands() {
    let help = Command::new(env!("CARGO_BIN_EXE_fusou")).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let commands: Vec<&str> = help
        .split_once("Commands:\n")
        .expect("a command list")
        .1
        .lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/reference.md")).unwrap();
    let table = doc.split_once("| command | what |").expect("the table of commands").1;
    let documented: Vec<&str> = table.lines().skip(2).take_while(|l| l.starts_with('|')).filter_map(|l| l.split('`').nth(1)).collect();
    assert_eq!(documented, commands, "docs/reference.md's commands, in `fusou --help`'s order");
}
