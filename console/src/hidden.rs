//! Text typed where no one may read it: the password at the re-login
//! prompt and the password fields of the forms, from the first key press
//! to the one request that sends it. It is never drawn (the prompt shows
//! dots), its `Debug` says nothing of it, so no status line, log or panic
//! message can show it, and its bytes are wiped when it is dropped, also
//! those a longer text outgrew.

use zeroize::{Zeroize as _, Zeroizing};

/// Hidden text; see the module docs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Hidden(Zeroizing<String>);

impl Hidden {
    /// The text, for the one call that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// How many characters were typed, for the prompt's dots.
    pub fn len(&self) -> usize {
        self.0.chars().count()
    }

    /// Whether nothing was typed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One more character. When the text outgrows its buffer it moves to a
    /// larger one itself, wiping the old one (a `String` growing on its own
    /// would leave the old bytes behind in freed memory).
    pub fn push(&mut self, c: char) {
        if self.0.len() + c.len_utf8() > self.0.capacity() {
            let mut larger = String::with_capacity((self.0.capacity() * 2).max(32));
            larger.push_str(&self.0);
            self.0.zeroize();
            self.0 = Zeroizing::new(larger);
        }
        self.0.push(c);
    }

    /// One character less (its bytes stay in the buffer, which is wiped
    /// whole on drop).
    pub fn pop(&mut self) {
        self.0.pop();
    }
}

impl From<&str> for Hidden {
    fn from(text: &str) -> Self {
        let mut hidden = Self::default();
        text.chars().for_each(|c| hidden.push(c));
        hidden
    }
}

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hidden(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_says_nothing_of_the_text_not_even_its_length() {
        let hidden = Hidden::from("correct horse");
        assert_eq!(format!("{hidden:?}"), "Hidden(..)");
        assert_eq!(format!("{:?}", Hidden::default()), "Hidden(..)");
    }

    #[test]
    fn typing_and_deleting_edit_the_text() {
        let mut hidden = Hidden::default();
        "s3cretx".chars().for_each(|c| hidden.push(c));
        hidden.pop();
        assert_eq!((hidden.expose(), hidden.len(), hidden.is_empty()), ("s3cret", 6, false));
        assert_eq!(hidden, Hidden::from("s3cret"));
    }
}
