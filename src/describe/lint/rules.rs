//! The rules, one function each. A rule reads the text and what was asked and reports what it
//! finds through `found(code, message, excerpt)`; the codes and severities are in `RULES`.

use super::Expectation;
use super::language;
use super::phrases;
use crate::model::Output;

type Found<'f> = dyn FnMut(&'static str, String, Option<String>) + 'f;

pub fn check(output: Output, text: &str, expect: &Expectation<'_>, found: &mut Found<'_>) {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        found(
            "empty",
            format!(
                "The {} is empty: write what the image shows, or mark the image decorative.",
                name(output)
            ),
            None,
        );
        return;
    }
    let lang = language::primary(expect.language);
    placeholder(output, trimmed, found);
    file_name(trimmed, found);
    unreadable(trimmed, found);
    if output == Output::Keywords {
        return;
    }
    length(output, trimmed, expect, &lang, found);
    opening(output, trimmed, &lang, found);
    repetition(trimmed, &lang, found);
    all_caps(trimmed, found);
    if let Some(title) = expect.title {
        repeats_title(output, trimmed, title, found);
    }
    if let Some(guessed) = language::differs(trimmed, &lang) {
        found(
            "language_mismatch",
            format!(
                "This reads like `{guessed}`, but `{}` was asked for: translate it, or ask again with `language` set.",
                expect.language
            ),
            None,
        );
    }
    if output == Output::AltText {
        promotional(trimmed, &lang, found);
    }
}

fn name(output: Output) -> &'static str {
    match output {
        Output::AltText => "alt text",
        Output::Description => "description",
        Output::SeoTitle => "SEO title",
        Output::Keywords => "keyword list",
    }
}

/// Lower case, with the punctuation around it and inner runs of white space gone.
fn normalise(text: &str) -> String {
    text.to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_string()
}

/// Languages written without spaces between words.
fn unspaced(lang: &str) -> bool {
    matches!(lang, "ja" | "zh")
}

fn words(text: &str, lang: &str) -> Vec<String> {
    if unspaced(lang) {
        return text
            .chars()
            .filter(|c| c.is_alphanumeric())
            .map(|c| c.to_lowercase().collect())
            .collect();
    }
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

fn length(output: Output, text: &str, expect: &Expectation<'_>, lang: &str, found: &mut Found<'_>) {
    let chars = text.chars().count();
    let words = words(text, lang).len();
    if let Some(max) = expect.max_chars.filter(|max| chars > *max) {
        found(
            "too_long",
            format!(
                "The {} has {chars} characters, over the {max} asked for: keep what tells the image apart (product, view, colour, material) and drop the rest; a longer text belongs in the description.",
                name(output)
            ),
            None,
        );
    }
    if let Some(max) = expect.max_words.filter(|max| words > *max) {
        found(
            "too_long",
            format!(
                "The {} has {words} words, over the {max} asked for: shorten it.",
                name(output)
            ),
            None,
        );
    }
    let short = match output {
        Output::AltText => {
            chars < 3 || (!unspaced(lang) && words < 2) || (unspaced(lang) && chars < 4)
        }
        Output::Description => chars < 3 || (!unspaced(lang) && words < 3),
        _ => chars < 3,
    };
    if short {
        found(
            "too_short",
            format!(
                "\"{text}\" is too short to tell a screen-reader user what the image shows: name the product, the view and what sets it apart."
            ),
            None,
        );
    }
}

fn opening(output: Output, text: &str, lang: &str, found: &mut Found<'_>) {
    if output == Output::Keywords {
        return;
    }
    let lower = text.to_lowercase();
    let start = lower.trim_start_matches(|c: char| !c.is_alphanumeric());
    let label = phrases::LABELS
        .iter()
        .find(|label| lower.starts_with(*label));
    let opening = phrases::openings(lang)
        .iter()
        .chain(if lang == "en" {
            &[][..]
        } else {
            phrases::openings("en")
        })
        .filter(|phrase| starts_with_phrase(start, phrase))
        .max_by_key(|phrase| phrase.len());
    let body = lower.trim_end_matches(|c: char| !c.is_alphanumeric());
    let ending = phrases::endings(lang).iter().find(|e| body.ends_with(*e));
    let excerpt = label.or(opening).or(ending);
    if let Some(excerpt) = excerpt {
        found(
            "redundant_opening",
            format!(
                "\"{}\" says it is an image, which a screen reader already announces: start with what it shows.",
                excerpt.trim()
            ),
            Some(excerpt.trim().to_string()),
        );
    }
}

/// A phrase at the start of `text`, ending at a word boundary.
fn starts_with_phrase(text: &str, phrase: &str) -> bool {
    text.strip_prefix(phrase).is_some_and(|rest| {
        phrase.ends_with([' ', '\'', ':']) || !rest.starts_with(char::is_alphanumeric)
    })
}

fn placeholder(output: Output, text: &str, found: &mut Found<'_>) {
    let lower = text.to_lowercase();
    let items: Vec<String> = if output == Output::Keywords {
        text.split(',').map(normalise).collect()
    } else {
        vec![normalise(text)]
    };
    let whole = items.iter().find(|item| {
        let numbered =
            item.trim_end_matches(|c: char| c.is_ascii_digit() || c == ' ' || c == '_' || c == '-');
        phrases::PLACEHOLDERS.contains(&item.as_str())
            || (numbered.len() < item.len() && phrases::PLACEHOLDERS.contains(&numbered))
    });
    let fragment = phrases::BOILERPLATE.iter().find(|b| lower.contains(*b));
    if let Some(excerpt) = whole.cloned().or(fragment.map(|f| f.to_string())) {
        found(
            "placeholder",
            format!(
                "\"{excerpt}\" is placeholder text that describes nothing: say what the image shows."
            ),
            Some(excerpt),
        );
    }
}

const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "gif", "webp", "avif", "heic", "heif", "tif", "tiff", "bmp", "svg",
];

fn file_name(text: &str, found: &mut Found<'_>) {
    let named_file = text.split_whitespace().find(|token| {
        let token = token.trim_matches(|c: char| matches!(c, '"' | '\'' | '(' | ')' | ',' | ';'));
        token.rsplit_once('.').is_some_and(|(stem, ext)| {
            !stem.is_empty() && IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str())
        })
    });
    let single = !text.contains(char::is_whitespace);
    let camera = |token: &str| {
        let upper = token.to_ascii_uppercase();
        [
            "IMG", "DSC", "DSCN", "DSCF", "PXL", "DCIM", "GOPR", "P10", "SAM", "WP",
        ]
        .iter()
        .any(|prefix| {
            upper.strip_prefix(prefix).is_some_and(|rest| {
                let rest = rest.trim_start_matches(['_', '-']);
                rest.len() >= 3
                    && rest
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '_' || c == '-')
            })
        })
    };
    let slug = single
        && text.chars().filter(|c| *c == '_' || *c == '-').count() >= 2
        && text
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    let excerpt = named_file
        .map(str::to_string)
        .or_else(|| {
            text.split_whitespace()
                .find(|t| camera(t))
                .map(str::to_string)
        })
        .or_else(|| slug.then(|| text.to_string()));
    if let Some(excerpt) = excerpt {
        found(
            "file_name",
            format!(
                "\"{excerpt}\" reads like a file name: screen readers spell it out; describe the image instead."
            ),
            Some(excerpt),
        );
    }
}

fn unreadable(text: &str, found: &mut Found<'_>) {
    let symbol = text.chars().find(|c| {
        matches!(*c as u32,
            0x1F000..=0x1FAFF // emoji, pictographs, playing cards
            | 0x2600..=0x27BF // dingbats, miscellaneous symbols (★, ✓)
            | 0x2190..=0x21FF // arrows
            | 0x2500..=0x25FF // box drawing, blocks, geometric shapes
            | 0xFE0F          // emoji presentation selector
        )
    });
    let lower = text.to_lowercase();
    let markup = [
        "http://", "https://", "www.", "<", "&amp;", "&nbsp;", "&quot;", "&#", "**", "__",
    ]
    .into_iter()
    .find(|m| lower.contains(m))
    .filter(|m| {
        *m != "<" || lower.contains("</") || lower.contains("<br") || lower.contains("<img")
    });
    let hashtag = text
        .split_whitespace()
        .find(|t| t.len() > 1 && t.starts_with('#') && t[1..].chars().all(char::is_alphanumeric));
    let run = punctuation_run(text);
    let excerpt = symbol
        .map(|c| c.to_string())
        .or(markup.map(str::to_string))
        .or(hashtag.map(str::to_string))
        .or(run);
    if let Some(excerpt) = excerpt {
        found(
            "unreadable_characters",
            format!(
                "\"{excerpt}\" is read out badly or not at all by screen readers: write it in words or leave it out."
            ),
            Some(excerpt),
        );
    }
}

/// Three or more of one punctuation mark in a row ("!!!", "...", "---"), but not an ellipsis
/// character, which screen readers handle.
fn punctuation_run(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.windows(3).find_map(|w| {
        (w[0] == w[1] && w[1] == w[2] && w[0].is_ascii_punctuation()).then(|| w.iter().collect())
    })
}

fn repetition(text: &str, lang: &str, found: &mut Found<'_>) {
    let words = words(text, lang);
    // A phrase of up to eight words three times in a row, or a phrase of three or more words
    // anywhere three times, is a generation loop.
    let limit = if unspaced(lang) { 16 } else { 8 };
    for n in 1..=limit.min(words.len() / 3) {
        for start in 0..=words.len() - 3 * n {
            let phrase = &words[start..start + n];
            if phrase == &words[start + n..start + 2 * n]
                && phrase == &words[start + 2 * n..start + 3 * n]
            {
                return looping(phrase, lang, found);
            }
        }
    }
    let min_n = if unspaced(lang) { 4 } else { 3 };
    // Counted in one pass per length: an edit may be 10,000 characters of Japanese, and
    // comparing every phrase with every other would take seconds.
    for n in min_n..=limit.min(words.len() / 3) {
        let mut counts: std::collections::HashMap<&[String], usize> =
            std::collections::HashMap::new();
        for phrase in words.windows(n) {
            let count = counts.entry(phrase).or_default();
            *count += 1;
            if *count >= 3 {
                return looping(phrase, lang, found);
            }
        }
    }
    if unspaced(lang) {
        return;
    }
    for n in 1..=4.min(words.len() / 2) {
        for start in 0..=words.len() - 2 * n {
            let phrase = &words[start..start + n];
            // "so so" or a number like "2 2" can be meant; a repeated word of letters rarely is.
            if phrase == &words[start + n..start + 2 * n]
                && phrase.iter().any(|w| w.chars().count() > 2)
            {
                let excerpt = phrase.join(" ");
                found(
                    "repeated_words",
                    format!("\"{excerpt}\" is said twice in a row: say it once."),
                    Some(excerpt),
                );
                return;
            }
        }
    }
}

fn looping(phrase: &[String], lang: &str, found: &mut Found<'_>) {
    let excerpt = phrase.join(if unspaced(lang) { "" } else { " " });
    found(
        "repetition_loop",
        format!(
            "\"{excerpt}\" repeats three times or more: the model looped. Ask again (another seed) or rewrite it."
        ),
        Some(excerpt),
    );
}

fn all_caps(text: &str, found: &mut Found<'_>) {
    let cased: Vec<char> = text
        .chars()
        .filter(|c| c.is_lowercase() || c.is_uppercase())
        .collect();
    let upper = cased.iter().filter(|c| c.is_uppercase()).count();
    let words = text.split_whitespace().count();
    if cased.len() >= 8 && words >= 2 && upper * 10 >= cased.len() * 9 {
        found(
            "all_caps",
            "Written in capitals: some screen readers spell capitals out letter by letter, and it reads as shouting. Use sentence case.".to_string(),
            None,
        );
    }
}

fn repeats_title(output: Output, text: &str, title: &str, found: &mut Found<'_>) {
    let (text, title) = (normalise(text), normalise(title));
    if title.is_empty() || output == Output::SeoTitle {
        return;
    }
    if text == title || (title.contains(&text) && text.len() * 2 >= title.len()) {
        found(
            "repeats_title",
            format!(
                "The {} only repeats the product title: the page shows the title already; describe what this image shows (the view, colour, material, setting).",
                name(output)
            ),
            None,
        );
    }
}

fn promotional(text: &str, lang: &str, found: &mut Found<'_>) {
    let lower = text.to_lowercase();
    let hit = phrases::promotional(lang)
        .iter()
        .chain(if lang == "en" {
            &[][..]
        } else {
            phrases::promotional("en")
        })
        .find(|phrase| {
            lower.match_indices(*phrase).any(|(at, _)| {
                // Whole words only ("sale" is not in "wholesale"), where the phrase has word edges.
                let edge = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
                let before = lower[..at].chars().next_back();
                let after = lower[at + phrase.len()..].chars().next();
                (!edge(phrase.chars().next()) || !edge(before))
                    && (!edge(phrase.chars().next_back()) || !edge(after))
            })
        });
    if let Some(phrase) = hit {
        found(
            "promotional",
            format!(
                "\"{phrase}\" sells rather than describes: alt text says what is visible; keep offers for the page."
            ),
            Some(phrase.to_string()),
        );
    }
}
