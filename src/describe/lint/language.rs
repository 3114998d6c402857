//! A guess of the language a short product text is written in, good enough to notice a German
//! alt text on a French shop: the script first (Cyrillic, Greek, kana, Hangul, Han), then for
//! Latin script the frequent short words and the letters each language writes. Says nothing
//! when the text is too short or the evidence is thin: a wrong warning costs a reviewer's time.

use super::phrases::{LETTERS, STOPWORDS};

/// The primary subtag of a BCP 47 tag, with Norwegian's macro tag read as Bokmål.
pub fn primary(tag: &str) -> String {
    let primary = tag
        .split(['-', '_'])
        .next()
        .unwrap_or(tag)
        .to_ascii_lowercase();
    match primary.as_str() {
        "no" | "nn" => "nb".to_string(),
        _ => primary,
    }
}

/// Languages the guess cannot tell apart reliably in a sentence or two.
const CLOSE: &[&[&str]] = &[&["da", "nb", "sv"]];

/// Whether `a` and `b` are the same language for the linter's purpose.
pub fn same(a: &str, b: &str) -> bool {
    a == b
        || CLOSE
            .iter()
            .any(|group| group.contains(&a) && group.contains(&b))
}

/// The languages the guess knows; for others the linter does not check the language.
pub fn known(language: &str) -> bool {
    matches!(language, "el" | "ru" | "uk" | "ja" | "ko" | "zh")
        || STOPWORDS.iter().any(|(code, _)| *code == language)
}

#[derive(Default)]
struct Scripts {
    latin: usize,
    cyrillic: usize,
    greek: usize,
    kana: usize,
    hangul: usize,
    han: usize,
}

fn scripts(text: &str) -> Scripts {
    let mut s = Scripts::default();
    for c in text.chars().filter(|c| c.is_alphabetic()) {
        match c as u32 {
            0x0041..=0x024F | 0x1E00..=0x1EFF => s.latin += 1,
            0x0400..=0x052F => s.cyrillic += 1,
            0x0370..=0x03FF | 0x1F00..=0x1FFF => s.greek += 1,
            0x3040..=0x30FF | 0x31F0..=0x31FF => s.kana += 1,
            0xAC00..=0xD7AF | 0x1100..=0x11FF | 0x3130..=0x318F => s.hangul += 1,
            0x4E00..=0x9FFF | 0x3400..=0x4DBF => s.han += 1,
            _ => {}
        }
    }
    s
}

/// The language `text` is most likely written in, when the evidence is clear.
pub fn guess(text: &str) -> Option<String> {
    let s = scripts(text);
    let letters = s.latin + s.cyrillic + s.greek + s.kana + s.hangul + s.han;
    if letters < 8 {
        return None;
    }
    // A brand name in Latin letters inside Japanese text does not make it English: the script
    // that writes most of the letters decides.
    let (script, count) = [
        ("latin", s.latin),
        ("cyrillic", s.cyrillic),
        ("greek", s.greek),
        ("cjk", s.kana + s.han),
        ("hangul", s.hangul),
    ]
    .into_iter()
    .max_by_key(|(_, n)| *n)?;
    if count * 2 < letters {
        return None;
    }
    match script {
        "greek" => Some("el".into()),
        "hangul" => Some("ko".into()),
        "cjk" if s.kana > 0 => Some("ja".into()),
        "cjk" => Some("zh".into()),
        "cyrillic" => cyrillic(text),
        _ => latin(text),
    }
}

fn cyrillic(text: &str) -> Option<String> {
    let has = |set: &str| {
        text.chars()
            .any(|c| set.contains(c.to_lowercase().next().unwrap_or(c)))
    };
    match (has("іїєґ"), has("ыэъё")) {
        (true, false) => Some("uk".into()),
        (false, true) => Some("ru".into()),
        _ => None,
    }
}

fn latin(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphabetic() && c != '\'')
        .filter(|w| !w.is_empty())
        .collect();
    if words.len() < 4 {
        return None;
    }
    let mut scores: Vec<(&str, usize)> = STOPWORDS
        .iter()
        .map(|(language, stopwords)| {
            // Each word once: "a" three times is weak evidence (it is also Portuguese and Czech).
            let hits = stopwords.iter().filter(|s| words.contains(s)).count();
            let letters = LETTERS
                .iter()
                .find(|(code, _)| code == language)
                .map_or(0, |(_, set)| {
                    lower.chars().filter(|c| set.contains(*c)).count()
                });
            (*language, hits * 2 + letters)
        })
        .collect();
    scores.sort_by_key(|(_, score)| std::cmp::Reverse(*score));
    let (best, top) = scores[0];
    // Enough evidence, and clearly ahead of every language it is not close to.
    let runner_up = scores
        .iter()
        .skip(1)
        .find(|(language, _)| !same(language, best))
        .map_or(0, |(_, score)| *score);
    // Ahead by half again as much, or by two distinct words (Italian and Spanish share many).
    let clear = top >= runner_up * 2 || top >= runner_up + 4;
    (top >= 4 && top > runner_up && clear).then(|| best.to_string())
}

/// Whether `text` looks written in another language than `asked`: the guess is clear and is
/// not the asked language (or one the guess cannot tell from it).
pub fn differs(text: &str, asked: &str) -> Option<String> {
    let asked = primary(asked);
    if !known(&asked) {
        return None;
    }
    let guessed = guess(text)?;
    (!same(&guessed, &asked)).then_some(guessed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_the_languages_of_product_text() {
        for (text, language) in [
            (
                "A red leather handbag with a gold clasp on a white background",
                "en",
            ),
            (
                "Eine rote Lederhandtasche mit einem goldenen Verschluss auf weißem Grund",
                "de",
            ),
            (
                "Un sac à main en cuir rouge avec un fermoir doré sur fond blanc",
                "fr",
            ),
            (
                "Un bolso de cuero rojo con un cierre dorado sobre fondo blanco",
                "es",
            ),
            (
                "Una borsa in pelle rossa con chiusura dorata, vista di fronte su sfondo bianco",
                "it",
            ),
            (
                "Een rode leren handtas met een gouden sluiting op een witte achtergrond",
                "nl",
            ),
            (
                "Czerwona skórzana torebka ze złotym zapięciem na białym tle",
                "pl",
            ),
            (
                "Uma bolsa de couro vermelha com um fecho dourado sobre fundo branco",
                "pt",
            ),
            (
                "Красная кожаная сумка с золотой застёжкой на белом фоне",
                "ru",
            ),
            (
                "Червона шкіряна сумка з золотою застібкою на білому тлі",
                "uk",
            ),
            ("Μια κόκκινη δερμάτινη τσάντα με χρυσό κούμπωμα", "el"),
            ("白い背景に金色の留め具が付いた赤い革のハンドバッグ", "ja"),
            ("白色背景上带有金色扣环的红色皮革手提包", "zh"),
            ("흰색 배경에 금색 잠금장치가 있는 빨간 가죽 핸드백", "ko"),
        ] {
            assert_eq!(guess(text).as_deref(), Some(language), "{text}");
        }
    }

    #[test]
    fn says_nothing_without_evidence() {
        assert_eq!(guess("Nike Air Max 90"), None, "names only");
        assert_eq!(guess("Sneaker"), None, "one word");
        assert_eq!(differs("Une chaussure rouge sur fond blanc", "fr-CA"), None);
        assert_eq!(
            differs("En rød sko med hvide snørebånd og en sort sål", "nb"),
            None,
            "close languages"
        );
        assert_eq!(
            differs("A red shoe with white laces on a wooden floor", "ar"),
            None,
            "a language the guess does not know"
        );
        assert_eq!(
            differs("A red shoe with white laces on a wooden floor", "de").as_deref(),
            Some("en")
        );
    }
}
