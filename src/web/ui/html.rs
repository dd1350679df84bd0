//! HTML text: escaping and the one-placeholder-kind template filler the page shells use. Every value
//! that reaches a page through here is escaped; only the shells themselves (our own files) are
//! inserted as they are. Nothing here knows about requests or users.

/// Escapes text for use in HTML element content and in quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A value for a `{{name}}` placeholder.
pub enum Slot<'a> {
    /// Escaped before insertion.
    Text(&'a str),
    /// Inserted as it is: only for markup that is part of the binary (other templates).
    Markup(&'a str),
}

/// Replaces every `{{name}}` in `template` by its slot; unknown placeholders become empty, so a
/// typo shows as a missing value, never as a raw brace.
pub fn fill(template: &str, slots: &[(&str, Slot)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = after[..end].trim();
        match slots.iter().find(|(n, _)| *n == name) {
            Some((_, Slot::Text(text))) => out.push_str(&escape(text)),
            Some((_, Slot::Markup(markup))) => out.push_str(markup),
            None => {}
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<img src=x onerror="a('b')">&"#),
            "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;"
        );
    }

    #[test]
    fn fills_text_escaped_and_markup_raw() {
        let page = fill(
            "<p title=\"{{t}}\">{{ body }}</p>{{missing}}",
            &[
                ("t", Slot::Text("a\"b")),
                ("body", Slot::Markup("<b>x</b>")),
            ],
        );
        assert_eq!(page, "<p title=\"a&quot;b\"><b>x</b></p>");
    }

    #[test]
    fn unterminated_placeholder_is_kept_verbatim() {
        assert_eq!(fill("a {{b", &[]), "a {{b");
    }
}
