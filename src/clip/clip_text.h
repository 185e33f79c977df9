#pragma once
// Text normalisation of OpenAI CLIP's SimpleTokenizer, on Unicode code points (private header):
//
//   encode(text) = pretokenize(lower(whitespace_clean(strip(html_unescape(html_unescape(fix_text(text)))))))
//
// Each step reproduces the Python function it is named after (str.lower, str.isspace, html.unescape, the
// `regex` pattern with \p{L} / \p{N}); Unicode properties come from utf8proc.
#include <string>
#include <vector>

namespace kclip::clip_text {

// UTF-8 <-> code points. Invalid UTF-8 is a kclip::ValueError naming `what` and the byte offset.
std::u32string decode_utf8(const std::string& text, const std::string& what);
std::string encode_utf8(const std::u32string& text);
void append_utf8(std::string& out, char32_t c);

// The deterministic part of ftfy.fix_text (OpenAI's first step): HTML entities with ';' when the text has no '<',
// terminal escapes removed, Latin ligatures and full-width forms expanded, curly quotes straightened, control
// characters removed, NFC. ftfy's heuristic mojibake repair (fix_encoding) is not reproduced.
std::u32string fix_text(const std::u32string& text);
// Python's html.unescape: HTML5 named references (with the longest-prefix rule for names without ';'), decimal
// and hex references with HTML's replacements for invalid code points.
std::u32string html_unescape(const std::u32string& text);
// Python's str.isspace(): general category Zs, or bidirectional class WS, B or S.
bool is_space(char32_t c);
std::u32string strip(const std::u32string& text);
// re.sub(r'\s+', ' ', text).strip()
std::u32string whitespace_clean(const std::u32string& text);
// Python's str.lower(): full lower-case mapping (U+0130 -> "i̇") and the Final_Sigma rule.
std::u32string lower(const std::u32string& text);
// re.findall of OpenAI's pattern
//   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+   (IGNORECASE)
std::vector<std::u32string> pretokenize(const std::u32string& text);

// The whole chain above, before pretokenize.
std::u32string clean(const std::u32string& text);

}  // namespace kclip::clip_text
