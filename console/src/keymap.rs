//! The console's key map, written once. Each entry of [`KEY_MAP`] names its
//! keys, the action each gives and in which mode, how the help screen lists
//! them and where the footer shows them; the dispatch ([`from_key`]), the
//! help screen ([`help`]) and the footer ([`footer`]) are derived from it,
//! so the three cannot disagree (gitui's `KeyConfig` does the same).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use self::{Does::Act, Key::Code};
use crate::{action::Action, app::View, mode::Mode};

/// The modes an entry works in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Every mode.
    Anywhere,
    /// Moving around the table.
    Normal,
    /// Typing a filter.
    Filter,
    /// Waiting for `y`.
    Confirm,
    /// The help screen is open.
    Help,
    /// Typing a password at the hidden prompt.
    Password,
    /// Typing into a form.
    Form,
}

impl Context {
    fn holds(self, mode: &Mode) -> bool {
        match self {
            Context::Anywhere => true,
            Context::Normal => *mode == Mode::Normal,
            Context::Filter => *mode == Mode::Filter,
            Context::Confirm => matches!(mode, Mode::Confirm(_)),
            Context::Help => *mode == Mode::Help,
            Context::Password => matches!(mode, Mode::Password(_)),
            Context::Form => matches!(mode, Mode::Form(_)),
        }
    }
}

/// A key an entry answers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// This key, whatever the modifiers (Shift-G arrives as `G`).
    Code(KeyCode),
    /// Control and this character; looked at before any other key.
    Control(char),
    /// Any character key no other entry of the mode takes.
    AnyCharacter,
    /// Any key no other entry of the mode takes.
    AnyOther,
}

/// What a key does.
// `Act` carries an `Action`, whose largest variant holds a backend update
// (an audit event); a key table entry is built once per key press, so the
// size costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Does {
    /// This action.
    Act(Action),
    /// The typed character goes into the filter.
    TypeIntoFilter,
    /// The typed character goes into the hidden password.
    TypeIntoPassword,
    /// The typed character goes into the open form.
    TypeIntoForm,
}

/// Which label the footer gives an entry in each view.
#[derive(Debug, Clone, Copy)]
pub enum Label {
    /// The same label in every view.
    Everywhere(&'static str),
    /// A label per view, in [`View::ALL`] order; `None` leaves the entry
    /// out of that view's footer (it does nothing useful there).
    PerView([Option<&'static str>; View::ALL.len()]),
}

/// How the footer shows an entry.
#[derive(Debug, Clone, Copy)]
pub struct Footer {
    /// The keys, as the footer names them.
    pub keys: &'static str,
    /// What they do, shown after the keys (may be empty).
    pub label: Label,
    /// Position in the footer: lower comes first.
    pub priority: u8,
}

/// One entry of the key map: some keys, and one line of help about them.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Where the keys work.
    pub context: Context,
    /// The keys and what each does.
    pub keys: &'static [(Key, Does)],
    /// The keys as the help screen names them, and what they do; `None`
    /// keeps the entry off the help screen.
    pub help: Option<(&'static str, &'static str)>,
    /// How the footer shows the entry, if it does.
    pub footer: Option<Footer>,
}

/// Every key of the console. The help screen lists the entries in this
/// order; the footer orders them by priority.
pub static KEY_MAP: &[Entry] = &[
    Entry { context: Context::Anywhere, keys: &[(Key::Control('c'), Act(Action::Quit))], help: None, footer: None },
    Entry {
        context: Context::Normal,
        keys: &[(Code(KeyCode::Tab), Act(Action::NextView)), (Code(KeyCode::BackTab), Act(Action::PrevView))],
        help: Some(("Tab / Shift-Tab", "next / previous view")),
        footer: Some(Footer { keys: "Tab", label: Label::Everywhere("views"), priority: 1 }),
    },
    Entry {
        context: Context::Normal,
        keys: &[
            (Code(KeyCode::Char('1')), Act(Action::ShowView(View::Sessions))),
            (Code(KeyCode::Char('2')), Act(Action::ShowView(View::Tokens))),
            (Code(KeyCode::Char('3')), Act(Action::ShowView(View::Users))),
            (Code(KeyCode::Char('4')), Act(Action::ShowView(View::Events))),
            (Code(KeyCode::Char('5')), Act(Action::ShowView(View::Dashboard))),
            (Code(KeyCode::Char('6')), Act(Action::ShowView(View::ServiceAccounts))),
        ],
        help: Some(("1 … 6", "Sessions, Tokens, Users, Events, Dashboard, Service accounts")),
        footer: None,
    },
    Entry {
        context: Context::Normal,
        keys: &[
            (Code(KeyCode::Up), Act(Action::Up)),
            (Code(KeyCode::Char('k')), Act(Action::Up)),
            (Code(KeyCode::Down), Act(Action::Down)),
            (Code(KeyCode::Char('j')), Act(Action::Down)),
        ],
        help: Some(("↑ ↓ / j k", "move the selection")),
        footer: Some(Footer { keys: "↑↓ jk", label: Label::Everywhere("move"), priority: 2 }),
    },
    Entry {
        context: Context::Normal,
        keys: &[
            (Code(KeyCode::PageUp), Act(Action::PageUp)),
            (Code(KeyCode::PageDown), Act(Action::PageDown)),
            (Code(KeyCode::Home), Act(Action::Top)),
            (Code(KeyCode::Char('g')), Act(Action::Top)),
            (Code(KeyCode::End), Act(Action::Bottom)),
            (Code(KeyCode::Char('G')), Act(Action::Bottom)),
        ],
        help: Some(("PgUp PgDn / g G", "page up / down, first / last row")),
        footer: None,
    },
    Entry {
        context: Context::Normal,
        keys: &[(Code(KeyCode::Char('/')), Act(Action::StartFilter))],
        help: Some(("/", "filter the view (Enter keeps it, Esc clears it)")),
        footer: Some(Footer { keys: "/", label: Label::Everywhere("filter"), priority: 3 }),
    },
    Entry {
        context: Context::Normal,
        keys: &[(Code(KeyCode::Char('s')), Act(Action::CycleSort))],
        help: Some(("s", "sort by the next column")),
        footer: Some(Footer { keys: "s", label: Label::Everywhere("sort"), priority: 4 }),
    },
    Entry {
        context: Context::Normal,
        keys: &[(Code(KeyCode::Char('S')), Act(Action::ReverseSort))],
        help: Some(("S", "reverse the sort (▲ ascending, ▼ descending)")),
        footer: None,
    },
    Entry {
        context: Context::Normal,
        keys: &[(Code(KeyCode::Char('a')), Act(Action::ToggleInactive))],
        help: Some(("a", "also show ended (revoked, expired) sessions and tokens")),
        footer: None,
    },
    Entry {
        context: Context::Normal,
        keys: &[(Code(KeyCode::Enter), Act(Action::ToggleDetail))],
        help: Some(("Enter", "details: a session's tokens, a user's sessions, an account's secrets")),
        footer: Some(Footer {
            keys: "Enter",
            label: Label::PerView([
                Some("tokens"),
                Some("details"),
                Some("sessions"),
                Some("details"),
                None,
                Some("secrets"),
            ]),
            priority: 5,
        }),
    },
    Entry {
        context: Context::Normal,
        keys: &[(Code(KeyCode::Char('d')), Act(Action::RevokeSelected))],
        help: Some(("d", "revoke the selected session or token, or every token of a service account")),
        footer: Some(Footer {
            keys: "d",
            label: Label::PerView([Some("revoke"), Some("revoke"), None, None, None, Some("revoke tokens")]),
            priority: 6,
        }),
    },
    Entry {
        context: Context::Normal,
        keys: &[(Code(KeyCode::Char('u')), Act(Action::RevokeUserOfSelected))],
        help: Some(("u", "revoke every session of the selected row's user")),
        footer: Some(Footer {
            keys: "u",
            label: Label::PerView([
                Some("revoke user"),
                Some("revoke user"),
                Some("revoke sessions"),
                Some("revoke user"),
                None,
                None,
            ]),
            priority: 7,
        }),
    },
    Entry {
        context: Context::Normal,
        keys: &[(Code(KeyCode::Char('x')), Act(Action::ToggleUserDisabled))],
        help: Some(("x", "disable / enable the selected row's user, or the selected service account")),
        footer: Some(Footer {
            keys: "x",
            label: Label::PerView([
                Some("disable user"),
                None,
                Some("disable/enable"),
                None,
                None,
                Some("disable/enable"),
            ]),
            priority: 8,
        }),
    },
    Entry {
        context: Context::Normal,
        keys: &[(Code(KeyCode::Char('K')), Act(Action::EmergencyKeyRotation))],
        help: Some(("K", "emergency key rotation (type \"rotate\")")),
        footer: None,
    },
    Entry {
        context: Context::Normal,
        keys: &[(Code(KeyCode::Char('D')), Act(Action::RevokeFiltered))],
        help: Some(("D", "revoke every active session the filter matches")),
        footer: Some(Footer {
            keys: "D",
            label: Label::PerView([Some("revoke filtered"), None, None, None, None, None]),
            // Dropped before `d revoke` on a narrow terminal: the everyday action stays.
            priority: 4,
        }),
    },
    Entry {
        context: Context::Normal,
        keys: &[(Code(KeyCode::Char('n')), Act(Action::NewUser))],
        help: Some(("n", "create a user")),
        footer: None,
    },
    Entry {
        context: Context::Normal,
        keys: &[(Code(KeyCode::Char('p')), Act(Action::ResetPassword))],
        help: Some(("p", "reset the selected user's password")),
        footer: None,
    },
    Entry {
        context: Context::Normal,
        keys: &[(Code(KeyCode::Char('R')), Act(Action::EditRoles))],
        help: Some(("R", "edit the selected user's roles")),
        footer: None,
    },
    Entry {
        context: Context::Normal,
        keys: &[(Code(KeyCode::Char('L')), Act(Action::StartLogin))],
        help: Some(("L", "log in again (after the console's own session ended)")),
        footer: None,
    },
    Entry {
        context: Context::Password,
        keys: &[(Code(KeyCode::Enter), Act(Action::PasswordSubmit))],
        help: None,
        footer: Some(Footer { keys: "Enter", label: Label::Everywhere("log in"), priority: 2 }),
    },
    Entry {
        context: Context::Password,
        keys: &[(Code(KeyCode::Esc), Act(Action::Cancel))],
        help: None,
        footer: Some(Footer { keys: "Esc", label: Label::Everywhere("cancel"), priority: 3 }),
    },
    Entry {
        context: Context::Password,
        keys: &[(Code(KeyCode::Backspace), Act(Action::PasswordBackspace))],
        help: None,
        footer: None,
    },
    Entry {
        context: Context::Password,
        keys: &[(Key::AnyCharacter, Does::TypeIntoPassword)],
        help: None,
        footer: Some(Footer { keys: "type the password", label: Label::Everywhere(""), priority: 1 }),
    },
    Entry {
        context: Context::Confirm,
        keys: &[(Code(KeyCode::Char('y')), Act(Action::Confirm)), (Code(KeyCode::Char('Y')), Act(Action::Confirm))],
        help: Some(("y", "confirm a revocation (any other key cancels)")),
        footer: Some(Footer { keys: "y", label: Label::Everywhere("confirm"), priority: 1 }),
    },
    Entry {
        context: Context::Confirm,
        keys: &[(Key::AnyOther, Act(Action::Cancel))],
        help: None,
        footer: Some(Footer { keys: "any other key cancels", label: Label::Everywhere(""), priority: 2 }),
    },
    Entry {
        context: Context::Normal,
        keys: &[(Code(KeyCode::Char('?')), Act(Action::ToggleHelp))],
        help: Some(("?", "this help")),
        footer: Some(Footer { keys: "?", label: Label::Everywhere("help"), priority: 9 }),
    },
    Entry {
        context: Context::Normal,
        keys: &[(Code(KeyCode::Char('q')), Act(Action::Quit))],
        help: Some(("q / Ctrl-C", "quit")),
        footer: Some(Footer { keys: "q", label: Label::Everywhere("quit"), priority: 10 }),
    },
    // Esc outside the filter closes the detail pane, or else clears the
    // filter (the help of `/` says so).
    Entry {
        context: Context::Normal,
        keys: &[(Code(KeyCode::Esc), Act(Action::Back))],
        help: Some(("Esc", "close the details, or clear the filter")),
        footer: None,
    },
    Entry {
        context: Context::Filter,
        keys: &[(Code(KeyCode::Enter), Act(Action::FilterKeep))],
        help: None,
        footer: Some(Footer { keys: "Enter", label: Label::Everywhere("keep"), priority: 2 }),
    },
    Entry {
        context: Context::Filter,
        keys: &[(Code(KeyCode::Esc), Act(Action::FilterClear))],
        help: None,
        footer: Some(Footer { keys: "Esc", label: Label::Everywhere("clear"), priority: 3 }),
    },
    Entry {
        context: Context::Filter,
        keys: &[(Code(KeyCode::Backspace), Act(Action::FilterBackspace))],
        help: None,
        footer: None,
    },
    Entry {
        context: Context::Filter,
        keys: &[(Key::AnyCharacter, Does::TypeIntoFilter)],
        help: None,
        footer: Some(Footer { keys: "type to filter", label: Label::Everywhere(""), priority: 1 }),
    },
    Entry {
        context: Context::Form,
        keys: &[(Code(KeyCode::Enter), Act(Action::FormEnter))],
        help: None,
        footer: Some(Footer { keys: "Enter", label: Label::Everywhere("next / submit"), priority: 1 }),
    },
    Entry {
        context: Context::Form,
        keys: &[(Code(KeyCode::Esc), Act(Action::Cancel))],
        help: None,
        footer: Some(Footer { keys: "Esc", label: Label::Everywhere("cancel"), priority: 2 }),
    },
    Entry {
        context: Context::Form,
        keys: &[(Code(KeyCode::Backspace), Act(Action::FormBackspace))],
        help: None,
        footer: None,
    },
    Entry { context: Context::Form, keys: &[(Key::AnyCharacter, Does::TypeIntoForm)], help: None, footer: None },
    // Any key closes the help screen.
    Entry { context: Context::Help, keys: &[(Key::AnyOther, Act(Action::ToggleHelp))], help: None, footer: None },
];

/// The action of a key press in the console's current mode. Control keys
/// come first, then the keys entries name, then the catch-alls; a key no
/// entry takes does nothing.
pub fn from_key(mode: &Mode, key: KeyEvent) -> Action {
    let best = KEY_MAP
        .iter()
        .filter(|e| e.context.holds(mode))
        .flat_map(|e| e.keys.iter())
        .filter_map(|(bound, does)| Some((precedence(*bound, key)?, does)))
        .min_by_key(|(precedence, _)| *precedence);
    match best {
        Some((_, Does::Act(action))) => action.clone(),
        Some((_, Does::TypeIntoFilter)) => match key.code {
            KeyCode::Char(c) => Action::FilterChar(c),
            _ => Action::Nothing,
        },
        Some((_, Does::TypeIntoPassword)) => match key.code {
            KeyCode::Char(c) => Action::PasswordChar(c),
            _ => Action::Nothing,
        },
        Some((_, Does::TypeIntoForm)) => match key.code {
            KeyCode::Char(c) => Action::FormChar(c),
            _ => Action::Nothing,
        },
        None => Action::Nothing,
    }
}

/// Whether `bound` takes the press `key`, and if so how strongly: lower
/// wins over higher.
fn precedence(bound: Key, key: KeyEvent) -> Option<u8> {
    match bound {
        Key::Control(c) => (key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char(c)).then_some(0),
        Key::Code(code) => (code == key.code).then_some(1),
        Key::AnyCharacter => matches!(key.code, KeyCode::Char(_)).then_some(2),
        Key::AnyOther => Some(3),
    }
}

/// The help screen's lines: the keys and what they do.
pub fn help() -> impl Iterator<Item = (&'static str, &'static str)> {
    KEY_MAP.iter().filter_map(|e| e.help)
}

/// The footer of keys for the current mode and view, in at most `width`
/// characters: when it is too long, the entries that come first (moving,
/// switching, filtering: the keys every operator knows, and the help lists)
/// give way first, so the actions, `?` and `q` stay visible.
pub fn footer_within(mode: &Mode, view: View, width: usize) -> String {
    let mut entries = footer_entries(mode, view);
    while entries.len() > 1 && joined(&entries).chars().count() > width {
        entries.remove(0);
    }
    joined(&entries)
}

fn joined(entries: &[String]) -> String {
    entries.join(" · ")
}

/// The footer of keys for the current mode and view.
pub fn footer(mode: &Mode, view: View) -> String {
    joined(&footer_entries(mode, view))
}

/// The footer's entries for the current mode and view, in footer order.
fn footer_entries(mode: &Mode, view: View) -> Vec<String> {
    // The help screen covers the table; the footer under it stays the
    // table's, so the operator sees where any key returns to.
    let mode = if *mode == Mode::Help { &Mode::Normal } else { mode };
    let view_index = View::ALL.iter().position(|v| *v == view).unwrap_or(0);
    let mut shown: Vec<(u8, String)> = KEY_MAP
        .iter()
        .filter(|e| e.context.holds(mode))
        .filter_map(|e| e.footer)
        .filter_map(|f| {
            let label = match f.label {
                Label::Everywhere(label) => label,
                Label::PerView(labels) => labels[view_index]?,
            };
            let text = if label.is_empty() { f.keys.to_string() } else { format!("{} {label}", f.keys) };
            Some((f.priority, text))
        })
        .collect();
    shown.sort_by_key(|(priority, _)| *priority);
    shown.into_iter().map(|(_, text)| text).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{form::Form, messages::Command, mode::Pending};

    /// The README's key table names every key the help lists, so it
    /// cannot fall behind the key map.
    #[test]
    fn the_readme_key_table_names_every_key() {
        let readme = include_str!("../../README.md");
        let section = readme.split("## The console").nth(1).expect("a console section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let documented: Vec<&str> = section
            .lines()
            .filter(|line| line.starts_with("| `"))
            .flat_map(|row| row.split('`').skip(1).step_by(2))
            .flat_map(str::split_whitespace)
            .collect();
        for (keys, what) in help() {
            for key in keys.split_whitespace().filter(|k| !matches!(*k, "/" | "…")) {
                assert!(documented.contains(&key), "README's console keys lack `{key}` ({what})");
            }
        }
    }

    fn press(mode: &Mode, code: KeyCode) -> Action {
        from_key(mode, KeyEvent::new(code, KeyModifiers::NONE))
    }

    #[test]
    fn every_named_key_gives_the_action_of_its_entry() {
        for entry in KEY_MAP {
            let mode = match entry.context {
                Context::Confirm => {
                    Mode::Confirm(Pending { prompt: String::new(), command: Command::EmergencyKeyRotation })
                }
                Context::Filter => Mode::Filter,
                Context::Help => Mode::Help,
                Context::Password => Mode::Password(crate::hidden::Hidden::default()),
                Context::Form => Mode::Form(Form::rotate_keys()),
                Context::Normal | Context::Anywhere => Mode::Normal,
            };
            for (key, does) in entry.keys {
                let (Key::Code(code), Does::Act(action)) = (key, does) else { continue };
                // Actions hold no floats or ids here: their Debug text is equality.
                assert_eq!(format!("{:?}", press(&mode, *code)), format!("{action:?}"), "{code:?} in {mode:?}");
            }
        }
    }

    #[test]
    fn a_key_is_bound_at_most_once_per_mode() {
        for context in
            [Context::Normal, Context::Filter, Context::Confirm, Context::Help, Context::Password, Context::Form]
        {
            let keys: Vec<Key> = KEY_MAP
                .iter()
                .filter(|e| e.context == context || e.context == Context::Anywhere)
                .flat_map(|e| e.keys.iter().map(|(key, _)| *key))
                .collect();
            for (i, key) in keys.iter().enumerate() {
                assert!(!keys[i + 1..].contains(key), "{key:?} is bound twice in {context:?}");
            }
        }
    }

    #[test]
    fn a_narrow_footer_drops_the_moving_keys_first_and_keeps_the_actions() {
        let footer = footer_within(&Mode::Normal, View::Sessions, 78);
        assert!(footer.chars().count() <= 78, "{footer}");
        for key in ["d revoke", "x disable user", "? help", "q quit"] {
            assert!(footer.contains(key), "{key:?} missing from {footer}");
        }
        assert!(!footer.contains("↑↓"), "{footer}");
        assert_eq!(footer_within(&Mode::Normal, View::Sessions, 500), super::footer(&Mode::Normal, View::Sessions));
    }

    #[test]
    fn typing_goes_into_the_filter_and_control_c_quits_everywhere() {
        assert!(matches!(press(&Mode::Filter, KeyCode::Char('q')), Action::FilterChar('q')));
        assert!(matches!(press(&Mode::Filter, KeyCode::Tab), Action::Nothing));
        assert!(matches!(press(&Mode::Help, KeyCode::Char('x')), Action::ToggleHelp));
        for mode in [Mode::Normal, Mode::Filter, Mode::Help] {
            let quit = from_key(&mode, KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
            assert!(matches!(quit, Action::Quit), "{mode:?}");
        }
    }

    #[test]
    fn number_keys_jump_to_each_view_and_the_help_lists_them() {
        for (i, view) in View::ALL.iter().enumerate() {
            let digit = char::from_digit(i as u32 + 1, 10).expect("digit");
            assert!(matches!(press(&Mode::Normal, KeyCode::Char(digit)), Action::ShowView(v) if v == *view), "{digit}");
        }
        let help: Vec<_> = help().collect();
        for keys in ["1 … 6", "D", "n", "p", "R", "K"] {
            assert!(help.iter().any(|(k, _)| *k == keys), "{keys} is not in the help");
        }
    }

    #[test]
    fn a_form_takes_every_character_even_q_and_esc_cancels_it() {
        let form = Mode::Form(Form::rotate_keys());
        assert!(matches!(press(&form, KeyCode::Char('q')), Action::FormChar('q')));
        assert!(matches!(press(&form, KeyCode::Char('1')), Action::FormChar('1')));
        assert!(matches!(press(&form, KeyCode::Enter), Action::FormEnter));
        assert!(matches!(press(&form, KeyCode::Backspace), Action::FormBackspace));
        assert!(matches!(press(&form, KeyCode::Esc), Action::Cancel));
        let quit = from_key(&form, KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert!(matches!(quit, Action::Quit));
    }
}
