//! Small forms typed into the console: a new user, a password reset
//! (hidden input, typed twice), a user's roles, and the typed confirmation
//! of the emergency key rotation. A form is a few text fields; Enter moves
//! to the next one and, on the last, yields the command or says what is
//! wrong. Hidden values are never drawn and never printed by `Debug`.

use crate::{hidden::Hidden, messages::Command};

/// The word the emergency key rotation asks to be typed.
pub const ROTATE_WORD: &str = "rotate";

/// The longest value a field takes, in bytes (the server's bound for
/// passwords; usernames and role lists are shorter still).
pub const MAX_FIELD_BYTES: usize = 1024;

/// One text field.
#[derive(Clone, PartialEq, Eq)]
pub struct Field {
    /// What the field asks for.
    pub label: &'static str,
    /// What has been typed (wiped on drop, whether hidden or not: a
    /// field does not know whether a person typed a secret into it).
    pub value: Hidden,
    /// Drawn as dots, left out of `Debug`.
    pub hidden: bool,
}

impl std::fmt::Debug for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = if self.hidden { "<hidden>" } else { self.value.expose() };
        f.debug_struct("Field").field("label", &self.label).field("value", &value).finish()
    }
}

impl Field {
    fn text(label: &'static str, value: &str) -> Self {
        Self { label, value: Hidden::from(value), hidden: false }
    }

    fn hidden(label: &'static str) -> Self {
        Self { label, value: Hidden::default(), hidden: true }
    }

    /// The value as drawn: dots for a hidden field.
    pub fn shown(&self) -> String {
        if self.hidden { "•".repeat(self.value.len()) } else { self.value.expose().to_string() }
    }
}

/// What a form is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// The emergency key rotation: the word must be typed.
    RotateKeys,
    /// A new user: name, password, roles.
    CreateUser,
    /// A new password for a user, typed twice.
    SetPassword {
        /// The user's id.
        user_id: String,
        /// The user's name.
        username: String,
    },
    /// A user's roles, replaced as a whole.
    EditRoles {
        /// The user's id.
        user_id: String,
        /// The user's name.
        username: String,
    },
}

/// A form being filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    /// The pop-up's title.
    pub title: String,
    /// A line above the fields: what happens on submit.
    pub note: String,
    /// What the form is for.
    pub purpose: Purpose,
    /// The fields, top to bottom.
    pub fields: Vec<Field>,
    /// The field being typed into.
    pub current: usize,
    /// Why the last Enter on the last field was refused.
    pub error: Option<String>,
}

impl Form {
    fn new(title: String, note: String, purpose: Purpose, fields: Vec<Field>) -> Self {
        Self { title, note, purpose, fields, current: 0, error: None }
    }

    /// The emergency key rotation's typed confirmation.
    pub fn rotate_keys() -> Self {
        Self::new(
            "Emergency key rotation".into(),
            "Every token signed so far stops verifying at once; holders must refresh.".into(),
            Purpose::RotateKeys,
            vec![Field::text("type \"rotate\" to confirm", "")],
        )
    }

    /// A new user.
    pub fn create_user() -> Self {
        Self::new(
            "New user".into(),
            "Roles are separated by commas or spaces; none is fine.".into(),
            Purpose::CreateUser,
            vec![Field::text("username", ""), Field::hidden("password"), Field::text("roles", "")],
        )
    }

    /// A new password for `username`.
    pub fn set_password(user_id: String, username: String) -> Self {
        Self::new(
            format!("New password for {username}"),
            "Every session of the user ends too.".into(),
            Purpose::SetPassword { user_id, username },
            vec![Field::hidden("new password"), Field::hidden("once more")],
        )
    }

    /// The roles of `username`, starting from those it has.
    pub fn edit_roles(user_id: String, username: String, roles: &[String]) -> Self {
        Self::new(
            format!("Roles of {username}"),
            "Replaces every role; separate them by commas or spaces.".into(),
            Purpose::EditRoles { user_id, username },
            vec![Field::text("roles", &roles.join(", "))],
        )
    }

    /// Types a character into the current field (up to its bound).
    pub fn type_char(&mut self, c: char) {
        if let Some(field) = self.fields.get_mut(self.current)
            && field.value.expose().len() + c.len_utf8() <= MAX_FIELD_BYTES
        {
            field.value.push(c);
        }
        self.error = None;
    }

    /// Deletes the current field's last character.
    pub fn backspace(&mut self) {
        if let Some(field) = self.fields.get_mut(self.current) {
            field.value.pop();
        }
    }

    /// Enter: the next field, or, on the last, the command the form asks
    /// for. `None` keeps the form open (with [`Form::error`] set when the
    /// values are refused).
    pub fn enter(&mut self) -> Option<Command> {
        if self.current + 1 < self.fields.len() {
            self.current += 1;
            return None;
        }
        match self.command() {
            Ok(command) => Some(command),
            Err(error) => {
                self.error = Some(error);
                None
            }
        }
    }

    fn value(&self, i: usize) -> &str {
        self.fields.get(i).map_or("", |f| f.value.expose())
    }

    fn command(&self) -> Result<Command, String> {
        match &self.purpose {
            Purpose::RotateKeys if self.value(0).trim() == ROTATE_WORD => Ok(Command::EmergencyKeyRotation),
            Purpose::RotateKeys => Err(format!("type the word \"{ROTATE_WORD}\" (or Esc to cancel)")),
            Purpose::CreateUser => {
                let username = self.value(0).trim();
                if username.is_empty() {
                    return Err("the username is empty".into());
                }
                if self.value(1).is_empty() {
                    return Err("the password is empty".into());
                }
                Ok(Command::CreateUser {
                    username: username.to_string(),
                    password: Hidden::from(self.value(1)),
                    roles: roles(self.value(2)),
                })
            }
            Purpose::SetPassword { user_id, username } => {
                if self.value(0).is_empty() {
                    return Err("the password is empty".into());
                }
                if self.value(0) != self.value(1) {
                    return Err("the two passwords differ".into());
                }
                Ok(Command::SetPassword {
                    user_id: user_id.clone(),
                    username: username.clone(),
                    password: Hidden::from(self.value(0)),
                })
            }
            Purpose::EditRoles { user_id, username } => Ok(Command::SetRoles {
                user_id: user_id.clone(),
                username: username.clone(),
                roles: roles(self.value(0)),
            }),
        }
    }
}

/// "admin, billing ops" → `["admin", "billing", "ops"]`.
fn roles(text: &str) -> Vec<String> {
    text.split([',', ' ']).map(str::trim).filter(|r| !r.is_empty()).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(form: &mut Form, text: &str) {
        text.chars().for_each(|c| form.type_char(c));
    }

    #[test]
    fn the_key_rotation_needs_the_word_typed() {
        let mut form = Form::rotate_keys();
        typed(&mut form, "y");
        assert_eq!(form.enter(), None);
        assert!(form.error.as_deref().is_some_and(|e| e.contains("rotate")), "{form:?}");
        form.backspace();
        typed(&mut form, "rotate");
        assert_eq!(form.enter(), Some(Command::EmergencyKeyRotation));
    }

    #[test]
    fn a_new_user_takes_a_name_a_hidden_password_and_roles() {
        let mut form = Form::create_user();
        typed(&mut form, "dave");
        assert_eq!(form.enter(), None);
        typed(&mut form, "s3cret pass");
        assert_eq!(form.fields[1].shown(), "•••••••••••");
        assert!(!format!("{form:?}").contains("s3cret"), "Debug shows no password: {form:?}");
        assert_eq!(form.enter(), None);
        typed(&mut form, "billing, ops");
        let Some(Command::CreateUser { username, password, roles }) = form.enter() else { panic!("{form:?}") };
        assert_eq!(
            (username.as_str(), password.expose(), roles),
            ("dave", "s3cret pass", vec!["billing".into(), "ops".into()])
        );
    }

    #[test]
    fn a_password_reset_must_be_typed_the_same_twice() {
        let mut form = Form::set_password("u1".into(), "carol".into());
        typed(&mut form, "one");
        form.enter();
        typed(&mut form, "two");
        assert_eq!(form.enter(), None);
        assert_eq!(form.error.as_deref(), Some("the two passwords differ"));
        "two".chars().for_each(|_| form.backspace());
        typed(&mut form, "one");
        assert!(matches!(form.enter(), Some(Command::SetPassword { password, .. }) if password.expose() == "one"));
    }

    #[test]
    fn roles_start_from_the_current_ones_and_a_field_is_bounded() {
        let mut form = Form::edit_roles("u1".into(), "carol".into(), &["admin".into(), "billing".into()]);
        assert_eq!(form.fields[0].value.expose(), "admin, billing");
        typed(&mut form, " ops");
        assert_eq!(
            form.enter(),
            Some(Command::SetRoles {
                user_id: "u1".into(),
                username: "carol".into(),
                roles: vec!["admin".into(), "billing".into(), "ops".into()]
            })
        );
        let mut form = Form::create_user();
        typed(&mut form, &"x".repeat(5000));
        assert_eq!(form.fields[0].value.expose().len(), MAX_FIELD_BYTES);
    }
}
