//! Byte-level BPE tokenizer (GPT-2 style) built from a GGUF file's own metadata.
//!
//! Reads `tokenizer.ggml.{model,pre,tokens,merges,bos_token_id,eos_token_id}`. Only
//! `model = "gpt2"` is supported. The pre-tokenizer follows `tokenizer.ggml.pre` (the names are
//! llama.cpp's, see [`PreTokenizer::from_gguf_name`]):
//! - `"smollm"` (SmolLM2; also llama.cpp's starcoder/refact/command-r): every numeric character
//!   becomes its own piece (HF `Digits(individual_digits=true)`, llama.cpp `\p{N}`), then the
//!   GPT-2 regex splits the rest;
//! - `"qwen2"` (Qwen2/2.5; also `"deepseek-r1-qwen"`): the Qwen2 regex ([`QWEN2_PATTERN`]), in
//!   llama.cpp's form (`LLAMA_VOCAB_PRE_TYPE_QWEN2`);
//! - `"gpt2"` / `"default"` / absent: the GPT-2 regex alone.
//!
//! Special tokens are not parsed out of the text: `encode` treats `<|im_start|>` like any text.
//! Bytes that have no byte token in the vocabulary (SmolLM2 lacks 21, e.g. 0x04) are dropped.
//! No Unicode normalization is applied (HF's Qwen2 `tokenizer.json` has an NFC normalizer,
//! llama.cpp has none): text that is not already NFC can split differently from HF.

use candle_core::quantized::gguf_file::{Content, Value};
use fancy_regex::Regex;
use std::collections::HashMap;

/// The GPT-2 pre-tokenizer regex (as in HF `ByteLevel(use_regex=true)`).
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// The Qwen2 pre-tokenizer regex as llama.cpp runs it (`LLAMA_VOCAB_PRE_TYPE_QWEN2`): HF's
/// [`QWEN2_HF_PATTERN`] with the case-insensitive contractions spelled out in ASCII. The two
/// differ only where Unicode case folding maps a non-ASCII character onto one of the contraction
/// letters: U+017F LATIN SMALL LETTER LONG S folds to `s`, so HF's `(?i:...)` (in the `regex`
/// crate's folding) splits `'ſt` into the contraction `'ſ` and `t`, while here and in llama.cpp
/// it is one piece (an apostrophe before a letter run).
pub const QWEN2_PATTERN: &str = concat!(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

/// The `Split` regex of HF Qwen2's `tokenizer.json` (kept to check [`QWEN2_PATTERN`] against).
pub const QWEN2_HF_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Why a tokenizer could not be built or could not split a text.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A required metadata key is absent.
    #[error("GGUF metadata has no {0}")]
    MissingKey(&'static str),
    /// A metadata value has the wrong type.
    #[error("GGUF metadata {key}: {source}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// candle's description of the mismatch.
        source: candle_core::Error,
    },
    /// `tokenizer.ggml.model` is not byte-level BPE.
    #[error("tokenizer model {0:?} is not supported (only byte-level BPE \"gpt2\")")]
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not implement.
    #[error(
        "pre-tokenizer {name:?} (GGUF tokenizer.ggml.pre) is not supported; supported: {}",
        PreTokenizer::SUPPORTED_NAMES.join(", ")
    )]
    UnsupportedPreTokenizer {
        /// The name found in the GGUF.
        name: String,
    },
    /// A merge is not two space-separated symbols.
    #[error("malformed merge {0:?}")]
    MalformedMerge(String),
    /// Too few byte tokens for byte-level BPE.
    #[error("vocabulary has only {0} of 256 byte tokens: not a byte-level BPE")]
    NotByteLevel(usize),
    /// The pre-tokenizer regex failed (compile error or backtrack limit on some input).
    #[error("pre-tokenizer regex: {0}")]
    Regex(#[from] Box<fancy_regex::Error>),
}

impl From<fancy_regex::Error> for TokenizerError {
    fn from(e: fancy_regex::Error) -> Self {
        Self::Regex(Box::new(e))
    }
}

/// Result of the tokenizer's fallible operations.
pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

/// How text is split into pieces before BPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// GPT-2 regex only.
    Gpt2,
    /// Each numeric character isolated, then the GPT-2 regex (`tokenizer.ggml.pre = "smollm"`).
    DigitsThenGpt2,
    /// The Qwen2 regex [`QWEN2_PATTERN`] (`tokenizer.ggml.pre = "qwen2"`).
    Qwen2,
}

impl PreTokenizer {
    /// Every `tokenizer.ggml.pre` value [`PreTokenizer::from_gguf_name`] accepts.
    pub const SUPPORTED_NAMES: &'static [&'static str] = &[
        "default",
        "gpt2",
        "smollm",
        "starcoder",
        "refact",
        "command-r",
        "qwen2",
        "deepseek-r1-qwen",
    ];

    /// The pre-tokenizer llama.cpp runs for a `tokenizer.ggml.pre` value (`None`: the key is
    /// absent, GPT-2). Names llama.cpp maps to the same regexes as ours are accepted; any other
    /// name is [`TokenizerError::UnsupportedPreTokenizer`], listing [`Self::SUPPORTED_NAMES`].
    pub fn from_gguf_name(name: Option<&str>) -> Result<Self> {
        Ok(match name {
            None | Some("gpt2" | "default") => Self::Gpt2,
            Some("smollm" | "starcoder" | "refact" | "command-r") => Self::DigitsThenGpt2,
            Some("qwen2" | "deepseek-r1-qwen") => Self::Qwen2,
            Some(other) => {
                return Err(TokenizerError::UnsupportedPreTokenizer {
                    name: other.to_string(),
                })
            }
        })
    }

    /// Reads and checks `tokenizer.ggml.model` and `tokenizer.ggml.pre` from GGUF metadata
    /// (cheap: no vocabulary is read), so that an unsupported file fails before its weights load.
    pub fn from_gguf(content: &Content) -> Result<Self> {
        let meta = &content.metadata;
        let model = string(meta, "tokenizer.ggml.model")?
            .ok_or(TokenizerError::MissingKey("tokenizer.ggml.model"))?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_string()));
        }
        Self::from_gguf_name(string(meta, "tokenizer.ggml.pre")?)
    }

    /// The regex of the pieces (after digit isolation for [`PreTokenizer::DigitsThenGpt2`]).
    pub fn pattern(self) -> &'static str {
        match self {
            Self::Gpt2 | Self::DigitsThenGpt2 => GPT2_PATTERN,
            Self::Qwen2 => QWEN2_PATTERN,
        }
    }
}

/// A byte-level BPE tokenizer.
#[derive(Debug)]
pub struct Tokenizer {
    tokens: Vec<String>,
    vocab: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    pre: PreTokenizer,
    regex: Regex,
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
    /// Beginning-of-sequence token id, if the GGUF names one.
    pub bos_id: Option<u32>,
    /// End-of-sequence token id, if the GGUF names one.
    pub eos_id: Option<u32>,
}

/// GPT-2's reversible map from bytes to printable unicode characters.
pub fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[b as usize] = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).expect("valid char")
        };
    }
    map
}

fn string<'a>(meta: &'a HashMap<String, Value>, key: &'static str) -> Result<Option<&'a str>> {
    meta.get(key)
        .map(|v| {
            v.to_string()
                .map(String::as_str)
                .map_err(|source| TokenizerError::BadValue { key, source })
        })
        .transpose()
}

fn strings(meta: &HashMap<String, Value>, key: &'static str) -> Result<Vec<String>> {
    let bad = |source| TokenizerError::BadValue { key, source };
    meta.get(key)
        .ok_or(TokenizerError::MissingKey(key))?
        .to_vec()
        .map_err(bad)?
        .iter()
        .map(|s| s.to_string().cloned().map_err(bad))
        .collect()
}

fn opt_u32(meta: &HashMap<String, Value>, key: &str) -> Option<u32> {
    meta.get(key).and_then(|v| v.to_u32().ok())
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's metadata (checks the model and pre-tokenizer
    /// names first, see [`PreTokenizer::from_gguf`]).
    pub fn from_gguf(content: &Content) -> Result<Self> {
        let pre = PreTokenizer::from_gguf(content)?;
        let meta = &content.metadata;
        let tokens = strings(meta, "tokenizer.ggml.tokens")?;
        let merges = strings(meta, "tokenizer.ggml.merges")?;
        Self::new(
            tokens,
            &merges,
            pre,
            opt_u32(meta, "tokenizer.ggml.bos_token_id"),
            opt_u32(meta, "tokenizer.ggml.eos_token_id"),
        )
    }

    /// Builds a tokenizer from its byte-level vocabulary (`tokens[id]`) and merges (`"a b"`).
    pub fn new(
        tokens: Vec<String>,
        merges: &[String],
        pre: PreTokenizer,
        bos_id: Option<u32>,
        eos_id: Option<u32>,
    ) -> Result<Self> {
        let vocab: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut ranks = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| TokenizerError::MalformedMerge(m.clone()))?;
            ranks.entry((a.to_string(), b.to_string())).or_insert(rank);
        }
        let byte_to_char = bytes_to_unicode();
        let char_to_byte = byte_to_char
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let n_bytes = byte_to_char
            .iter()
            .filter(|c| vocab.contains_key(c.encode_utf8(&mut [0; 4]) as &str))
            .count();
        // SmolLM2 lacks 21 byte tokens (bytes never or rarely seen in UTF-8: 0xC0, 0xF5.. and a
        // few control bytes); a vocabulary with few byte tokens is not byte-level BPE.
        if n_bytes < 128 {
            return Err(TokenizerError::NotByteLevel(n_bytes));
        }
        Ok(Self {
            tokens,
            vocab,
            ranks,
            pre,
            regex: Regex::new(pre.pattern())?,
            byte_to_char,
            char_to_byte,
            bos_id,
            eos_id,
        })
    }

    /// The pre-tokenizer in use.
    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.pre
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The token string (byte-level form) of `id`.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Splits `text` into the pieces BPE runs on.
    pub fn pre_tokenize<'a>(&self, text: &'a str) -> Result<Vec<&'a str>> {
        let mut out = Vec::new();
        let mut split_regex = |s: &'a str| -> Result<()> {
            for m in self.regex.find_iter(s) {
                out.push(m?.as_str());
            }
            Ok(())
        };
        match self.pre {
            PreTokenizer::Gpt2 | PreTokenizer::Qwen2 => split_regex(text)?,
            PreTokenizer::DigitsThenGpt2 => {
                let mut start = 0;
                for (i, c) in text.char_indices() {
                    if c.is_numeric() {
                        if start < i {
                            split_regex(&text[start..i])?;
                        }
                        split_regex(&text[i..i + c.len_utf8()])?;
                        start = i + c.len_utf8();
                    }
                }
                if start < text.len() {
                    split_regex(&text[start..])?;
                }
            }
        }
        Ok(out)
    }

    /// Byte-level BPE of one piece, appending ids to `out`.
    fn bpe(&self, piece: &str, out: &mut Vec<u32>) {
        let word: String = piece
            .bytes()
            .map(|b| self.byte_to_char[b as usize])
            .collect();
        if let Some(&id) = self.vocab.get(&word) {
            out.push(id);
            return;
        }
        // Characters (bytes) without a token are dropped before merging, as HF `tokenizers` does
        // for a BPE without `unk_token` (how the reference fixture was made).
        let mut syms: Vec<String> = word
            .chars()
            .map(String::from)
            .filter(|c| self.vocab.contains_key(c))
            .collect();
        loop {
            // The adjacent pair with the lowest merge rank (leftmost on ties).
            let best = syms
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| {
                    self.ranks
                        .get(&(w[0].clone(), w[1].clone()))
                        .map(|&r| (r, i))
                })
                .min();
            let Some((_, i)) = best else { break };
            let merged = format!("{}{}", syms[i], syms[i + 1]);
            syms[i] = merged;
            syms.remove(i + 1);
        }
        for s in syms {
            match self.vocab.get(&s) {
                Some(&id) => out.push(id),
                // A merge result outside the vocabulary: fall back to its characters, which all
                // have tokens (filtered above).
                None => out.extend(
                    s.chars()
                        .filter_map(|c| self.vocab.get(&c.to_string()).copied()),
                ),
            }
        }
    }

    /// Encodes `text` (no BOS/EOS added, special tokens not recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() / 3);
        let mut memo: HashMap<&str, Vec<u32>> = HashMap::new();
        for piece in self.pre_tokenize(text)? {
            let cached = memo.entry(piece).or_insert_with(|| {
                let mut v = Vec::new();
                self.bpe(piece, &mut v);
                v
            });
            ids.extend_from_slice(cached);
        }
        Ok(ids)
    }

    /// Decodes ids back to text (invalid UTF-8 replaced by U+FFFD; unknown ids skipped).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(tok) = self.tokens.get(id as usize) else {
                continue;
            };
            for c in tok.chars() {
                match self.char_to_byte.get(&c) {
                    Some(&b) => bytes.push(b),
                    None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_a_bijection() {
        let m = bytes_to_unicode();
        let set: std::collections::HashSet<char> = m.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(m[b' ' as usize], 'Ġ');
        assert_eq!(m[b'\n' as usize], 'Ċ');
        assert_eq!(m[b'A' as usize], 'A');
    }

    fn toy_with(pre: PreTokenizer) -> Tokenizer {
        let mut tokens: Vec<String> = bytes_to_unicode().iter().map(|c| c.to_string()).collect();
        let merges: Vec<String> = ["h e", "l l", "he ll", "hell o", "Ġ w"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for m in &merges {
            tokens.push(m.replace(' ', ""));
        }
        Tokenizer::new(tokens, &merges, pre, None, None).unwrap()
    }

    fn toy() -> Tokenizer {
        toy_with(PreTokenizer::DigitsThenGpt2)
    }

    #[test]
    fn toy_bpe_and_round_trip() {
        let t = toy();
        let ids = t.encode("hello world 123").unwrap();
        let toks: Vec<&str> = ids.iter().map(|&i| t.token(i).unwrap()).collect();
        assert_eq!(
            toks,
            ["hello", "Ġw", "o", "r", "l", "d", "Ġ", "1", "2", "3"]
        );
        for s in ["hello world 123", "naïve — 日本 😀\n\n  x", ""] {
            assert_eq!(t.decode(&t.encode(s).unwrap()), s);
        }
    }

    /// Byte-level tokens can split a character: decoding joins the bytes of all tokens first,
    /// so a sequence decodes whole even where its tokens alone would not.
    #[test]
    fn decode_joins_bytes_across_tokens() {
        let t = toy();
        let ids = t.encode("日").unwrap();
        assert_eq!(ids.len(), 3, "one byte token per UTF-8 byte");
        assert_eq!(t.decode(&ids), "日");
        assert_eq!(t.decode(&ids[..1]), "\u{FFFD}");
        let ids = t.encode(" hello").unwrap();
        assert_eq!(t.decode(&ids), " hello", "Ġ decodes to a space");
        assert_eq!(t.decode(&[9999]), "", "unknown ids are skipped");
    }

    #[test]
    fn pre_tokenizer_splits_like_gpt2() {
        let t = toy();
        let p = t.pre_tokenize("It's  a test\n\nby 12x").unwrap();
        assert_eq!(
            p,
            ["It", "'s", " ", " a", " test", "\n", "\n", "by", " ", "1", "2", "x"]
        );
    }

    /// Splits derived by hand from the Qwen2 regex (leftmost alternative that matches, greedy,
    /// backtracking): see the comments for the alternative that wins each piece.
    #[test]
    fn qwen2_splits_like_its_regex() {
        let t = toy_with(PreTokenizer::Qwen2);
        let cases: &[(&str, &[&str])] = &[
            // Digits one by one; a space before digits is its own piece (`\s+`: the lookahead
            // of `\s+(?!\S)` fails on the digit).
            (
                "in 2024, 7",
                &["in", " ", "2", "0", "2", "4", ",", " ", "7"],
            ),
            // Contractions in any case (GPT-2's are lowercase only).
            ("DON'T we'Re I'm", &["DON", "'T", " we", "'Re", " I", "'m"]),
            ("you'LL they'rE", &["you", "'LL", " they", "'rE"]),
            // Not a contraction: the apostrophe is the one non-letter before a letter run.
            ("o'clock", &["o", "'clock"]),
            // One punctuation (or space, or tab) character joins the letter run after it...
            ("(hello \tx", &["(hello", " ", "\tx"]),
            // ... two do not: `[^\s\p{L}\p{N}]+` takes them both, the letters stand alone.
            ("--foo ...bar", &["--", "foo", " ...", "bar"]),
            ("$100", &["$", "1", "0", "0"]),
            // Newlines: a run of them is one piece (`\s*[\r\n]+`), with the spaces before it;
            // punctuation takes the newlines after it.
            ("a\n\nb", &["a", "\n\n", "b"]),
            ("a  \n b", &["a", "  \n", " b"]),
            ("end.\n\nNext", &["end", ".\n\n", "Next"]),
            ("x\r\ny", &["x", "\r\n", "y"]),
            // Spaces: all but the last before a word (`\s+(?!\S)`), trailing spaces whole.
            ("hi   there  ", &["hi", "  ", " there", "  "]),
            // Non-ASCII letters and numbers.
            ("naïve 日本語½", &["naïve", " 日本語", "½"]),
        ];
        for (text, want) in cases {
            let got = t.pre_tokenize(text).unwrap();
            assert_eq!(&got, want, "text {text:?}");
            assert_eq!(got.concat(), *text);
        }
        // The GPT-2 pre-tokenizer splits the same texts otherwise (the cases above test Qwen2's
        // rules, not ones both share).
        let g = toy_with(PreTokenizer::Gpt2);
        assert_eq!(g.pre_tokenize("DON'T").unwrap(), ["DON", "'", "T"]);
        assert_eq!(g.pre_tokenize("2024").unwrap(), ["2024"]);
        assert_eq!(g.pre_tokenize("a\n\nb").unwrap(), ["a", "\n", "\n", "b"]);
        assert_eq!(g.pre_tokenize("(hello").unwrap(), ["(", "hello"]);
    }

    /// llama.cpp's ASCII-spelled regex splits like HF's `(?i:...)` one on text without the
    /// non-ASCII case-folding partners of the contraction letters.
    #[test]
    fn qwen2_pattern_agrees_with_hf_pattern() {
        let hf = Regex::new(QWEN2_HF_PATTERN).unwrap();
        let t = toy_with(PreTokenizer::Qwen2);
        let text = "It's 'S 'T 'RE 'Ve 'm 'LL 'D 'x DON'T — “quoted” (a) [b]\n\n\t tab\r\n\
                    1,234.5 ½ ٣ naïve Ünïcödé 日本語 😀!!\n  trailing   \n";
        let theirs: Vec<&str> = hf.find_iter(text).map(|m| m.unwrap().as_str()).collect();
        assert_eq!(t.pre_tokenize(text).unwrap(), theirs);
        // The documented difference.
        assert_eq!(t.pre_tokenize("'ſt").unwrap(), ["'ſt"]);
        let theirs: Vec<&str> = hf.find_iter("'ſt").map(|m| m.unwrap().as_str()).collect();
        assert_eq!(theirs, ["'ſ", "t"]);
    }

    #[test]
    fn pre_tokenizer_names() {
        assert_eq!(
            PreTokenizer::from_gguf_name(None).unwrap(),
            PreTokenizer::Gpt2
        );
        assert_eq!(
            PreTokenizer::from_gguf_name(Some("qwen2")).unwrap(),
            PreTokenizer::Qwen2
        );
        assert_eq!(
            PreTokenizer::from_gguf_name(Some("smollm")).unwrap(),
            PreTokenizer::DigitsThenGpt2
        );
        for name in PreTokenizer::SUPPORTED_NAMES {
            assert!(PreTokenizer::from_gguf_name(Some(name)).is_ok(), "{name}");
        }
        let e = PreTokenizer::from_gguf_name(Some("llama-bpe")).unwrap_err();
        assert!(
            matches!(&e, TokenizerError::UnsupportedPreTokenizer { name } if name == "llama-bpe")
        );
        let msg = e.to_string();
        assert!(msg.contains("\"llama-bpe\""), "{msg}");
        assert!(msg.contains("qwen2") && msg.contains("smollm"), "{msg}");
    }
}
