// OpenAI CLIP's text normalisation (see clip_text.h), step by step in the order SimpleTokenizer applies it.
#include "clip_text.h"

#include <kclip/error.h>

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace kclip::clip_text {
namespace {

struct HtmlEntity {
  const char* name;
  const char* text;
};
#include "html_entities.inc"

// ---- Unicode properties ------------------------------------------------------------------------------------

utf8proc_category_t category(char32_t c) { return utf8proc_category(static_cast<utf8proc_int32_t>(c)); }

bool is_letter(char32_t c) {  // \p{L}
  switch (category(c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
      return true;
    default:
      return false;
  }
}

bool is_number(char32_t c) {  // \p{N}
  const auto cat = category(c);
  return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
}

bool is_decimal(char32_t c) { return category(c) == UTF8PROC_CATEGORY_ND; }  // Python re's \d

char32_t simple_lower(char32_t c) { return static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))); }
char32_t simple_upper(char32_t c) { return static_cast<char32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(c))); }

// Unicode's Cased and Case_Ignorable properties, as Python's Final_Sigma rule uses them.
bool is_cased(char32_t c) {
  const auto cat = category(c);
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT ||
         simple_lower(c) != c || simple_upper(c) != c;
}

bool is_case_ignorable(char32_t c) {
  switch (category(c)) {
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_SK:
      return true;
    default:
      break;
  }
  // Word_Break MidLetter, MidNumLet and Single_Quote
  static constexpr char32_t kMid[] = {0x27, 0x2E, 0x3A, 0xB7, 0x387, 0x55F, 0x5F4, 0x2018, 0x2019,
                                      0x2024, 0x2027, 0xFE13, 0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A};
  return std::find(std::begin(kMid), std::end(kMid), c) != std::end(kMid);
}

// utf8proc_map with `options` over a code-point string (NFC, or NFKC with UTF8PROC_COMPAT).
std::u32string normalize(const std::u32string& text, int options) {
  const std::string utf8 = encode_utf8(text);
  utf8proc_uint8_t* mapped = nullptr;
  const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(utf8.data()),
                              static_cast<utf8proc_ssize_t>(utf8.size()), &mapped,
                              static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | options));
  if (n < 0) fail("utf8proc: {}", utf8proc_errmsg(n));
  std::string out(reinterpret_cast<const char*>(mapped), static_cast<size_t>(n));
  std::free(mapped);
  return decode_utf8(out, "normalised text");
}

std::u32string nfkc(char32_t c) { return normalize(std::u32string(1, c), UTF8PROC_COMPAT); }

// `c` equals the lower-case ASCII letter or symbol `a` under the `regex` package's IGNORECASE (simple case
// folding): its upper case, and ſ (U+017F) for s.
bool equal_ignoring_case(char32_t c, char a) {
  const auto lower = static_cast<char32_t>(a);
  return c == lower || (a >= 'a' && a <= 'z' && c == lower - 32) || (a == 's' && c == 0x17F);
}

bool starts_with(const std::u32string& text, size_t at, const char* ascii) {
  for (size_t k = 0; ascii[k]; ++k)
    if (at + k >= text.size() || !equal_ignoring_case(text[at + k], ascii[k])) return false;
  return true;
}

// Characters no alternative of OpenAI's pattern matches, skipped between tokens: whitespace, and U+0345
// (COMBINING GREEK YPOGEGRAMMENI, a mark whose case folding is the letter ι: under IGNORECASE the `regex` package
// puts it in neither [\p{L}] nor [^\s\p{L}\p{N}]; found by comparing every code point's class with the package).
bool matches_nothing(char32_t c) { return c == 0x345 || is_space(c); }

// 's|'t|'re|'ve|'m|'ll|'d at `i` under IGNORECASE: the match length, or 0.
size_t contraction_length(const std::u32string& text, size_t i) {
  for (const char* c : {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"})
    if (starts_with(text, i, c)) return std::strlen(c);
  return 0;
}

// ---- html.unescape -----------------------------------------------------------------------------------------

const char* find_entity(const std::string& name) {
  const auto* end = std::end(kHtmlEntities);
  const auto* it = std::lower_bound(std::begin(kHtmlEntities), end, name,
                                    [](const HtmlEntity& e, const std::string& n) { return std::strcmp(e.name, n.c_str()) < 0; });
  return it != end && name == it->name ? it->text : nullptr;
}

bool is_ascii(const std::u32string& s) {
  return std::all_of(s.begin(), s.end(), [](char32_t c) { return c < 0x80; });
}

std::string to_ascii(const std::u32string& s) { return std::string(s.begin(), s.end()); }

// html._replace_charref for "#123", "#x1F;" (the text after '&').
std::u32string numeric_reference(const std::u32string& digits, int base) {
  uint64_t value = 0;
  for (char32_t c : digits) {
    const int d = c <= '9' ? int(c - '0') : int((c | 0x20) - 'a' + 10);
    value = std::min<uint64_t>(value * base + d, 0x110000);  // anything past 0x10FFFF is equally invalid
  }
  for (const auto& [code, replacement] : kInvalidCharrefs)
    if (value == code) return std::u32string(1, replacement);
  if ((value >= 0xD800 && value <= 0xDFFF) || value > 0x10FFFF) return U"\uFFFD";
  if (std::find(std::begin(kInvalidCodepoints), std::end(kInvalidCodepoints), value) != std::end(kInvalidCodepoints))
    return U"";
  return std::u32string(1, static_cast<char32_t>(value));
}

// html._replace_charref for a name (with its ';' if present): exact, else the longest known prefix of length >= 2.
std::u32string named_reference(const std::u32string& name) {
  if (is_ascii(name))
    if (const char* text = find_entity(to_ascii(name))) return decode_utf8(text, "HTML entity");
  for (size_t x = name.size() - 1; x > 1; --x) {
    const std::u32string prefix = name.substr(0, x);
    if (!is_ascii(prefix)) continue;
    if (const char* text = find_entity(to_ascii(prefix))) return decode_utf8(text, "HTML entity") + name.substr(x);
  }
  return U"&" + name;
}

bool is_hex(char32_t c) { return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }
bool is_ascii_digit(char32_t c) { return c >= '0' && c <= '9'; }

// ---- ftfy steps --------------------------------------------------------------------------------------------

// Copies `text`, giving `reference(text, at, out)` each '&': it appends the replacement of the reference starting
// there to `out` and returns the characters it consumed, or returns 0 to keep the '&' as it is. Replacements are
// not scanned again (as re.sub).
template <typename Reference>
std::u32string replace_references(const std::u32string& text, Reference reference) {
  std::u32string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] == '&')
      if (const size_t consumed = reference(text, i, out)) {
        i += consumed;
        continue;
      }
    out += text[i++];
  }
  return out;
}

// ftfy's unescape_html: only "&name;" and "&#...;" forms (plus upper-cased names such as "&NTILDE;").
std::u32string ftfy_unescape_html(const std::u32string& text) {
  return replace_references(text, [](const std::u32string& t, size_t i, std::u32string& out) -> size_t {
    // &#?[0-9A-Za-z]{1,24};
    size_t j = i + 1;
    const bool numeric = j < t.size() && t[j] == '#';
    if (numeric) ++j;
    const size_t begin = j;
    while (j < t.size() && j - begin < 24 && t[j] < 0x80 && std::isalnum(static_cast<int>(t[j]))) ++j;
    if (j == begin || j >= t.size() || t[j] != ';') return 0;
    const std::u32string entity = t.substr(i, j + 1 - i);
    const std::u32string name = t.substr(begin, j + 1 - begin);  // with ';'
    std::u32string replacement = entity;
    if (numeric) {
      const std::u32string unescaped = html_unescape(entity);
      if (unescaped.find(';') == std::u32string::npos) replacement = unescaped;
    } else if (const char* exact = find_entity(to_ascii(name))) {
      replacement = decode_utf8(exact, "HTML entity");
    } else {
      // "&NTILDE;" -> "Ñ": an upper-cased lower-case name that is not itself an entity.
      std::u32string lowered = name;
      for (auto& c : lowered) c = simple_lower(c);
      std::u32string upper_again = lowered;
      for (auto& c : upper_again) c = simple_upper(c);
      const char* base = upper_again == name ? find_entity(to_ascii(lowered)) : nullptr;
      if (base && html_unescape(entity) == entity) {
        replacement.clear();
        for (char32_t c : decode_utf8(base, "HTML entity")) {
          if (c == 0xDF) replacement += U"SS";  // Python's full upper-casing of ß
          else replacement += simple_upper(c);
        }
      }
    }
    out += replacement;
    return j + 1 - i;
  });
}

// \033\[((?:\d|;)*)([a-zA-Z]) removed
std::u32string remove_terminal_escapes(const std::u32string& text) {
  std::u32string out;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] == 0x1B && i + 1 < text.size() && text[i + 1] == '[') {
      size_t j = i + 2;
      while (j < text.size() && (is_decimal(text[j]) || text[j] == ';')) ++j;
      if (j < text.size() && text[j] < 0x80 && std::isalpha(static_cast<int>(text[j]))) {
        i = j + 1;
        continue;
      }
    }
    out += text[i++];
  }
  return out;
}

// U+0080..U+009F read as Windows-1252 ("sloppy": undefined bytes keep their code point).
char32_t fix_c1_control(char32_t c) {
  if (c < 0x80 || c > 0x9F) return c;
  for (const auto& [code, replacement] : kInvalidCharrefs)
    if (code == c) return replacement;
  return c;
}

// ftfy's LIGATURES: Latin ligatures and legacy digraphs split into their letters (ﬅ keeps its long s, where
// NFKC would not).
const std::u32string* ligature(char32_t c) {
  static const std::pair<char32_t, std::u32string> kLigatures[] = {
      {0x132, U"IJ"}, {0x133, U"ij"}, {0x149, U"\u02bcn"}, {0x1F1, U"DZ"}, {0x1F2, U"Dz"}, {0x1F3, U"dz"},
      {0x1C4, U"D\u017d"}, {0x1C5, U"D\u017e"}, {0x1C6, U"d\u017e"}, {0x1C7, U"LJ"}, {0x1C8, U"Lj"}, {0x1C9, U"lj"},
      {0x1CA, U"NJ"}, {0x1CB, U"Nj"}, {0x1CC, U"nj"}, {0xFB00, U"ff"}, {0xFB01, U"fi"}, {0xFB02, U"fl"},
      {0xFB03, U"ffi"}, {0xFB04, U"ffl"}, {0xFB05, U"\u017ft"}, {0xFB06, U"st"}};
  for (const auto& [code, letters] : kLigatures)
    if (code == c) return &letters;
  return nullptr;
}

bool is_wide(char32_t c) { return c == 0x3000 || (c >= 0xFF01 && c < 0xFFF0); }

bool is_removed_control(char32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
         c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

char32_t uncurl(char32_t c) {
  if (c == 0x2BC || (c >= 0x2018 && c <= 0x201B)) return '\'';
  if (c >= 0x201C && c <= 0x201F) return '"';
  return c;
}

// fix_c1_controls, fix_latin_ligatures, fix_character_width, uncurl_quotes and fix_line_breaks, in ftfy's order
// (each maps single characters, so one pass does them all).
std::u32string fix_characters(const std::u32string& text) {
  std::u32string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    char32_t c = fix_c1_control(text[i]);
    if (const std::u32string* letters = ligature(c)) {  // ŉ's ʼ is then uncurled, as in ftfy
      for (char32_t l : *letters) out += uncurl(l);
      continue;
    }
    if (c == 0x3000) c = ' ';
    else if (is_wide(c)) {
      const std::u32string narrow = nfkc(c);
      if (narrow.size() == 1) c = narrow[0];
    }
    c = uncurl(c);
    if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') continue;  // "\r\n" -> "\n"
    if (c == '\r' || c == 0x2028 || c == 0x2029 || c == 0x85) c = '\n';
    out += c;
  }
  return out;
}

}  // namespace

// ---- UTF-8 -------------------------------------------------------------------------------------------------

std::u32string decode_utf8(const std::string& text, const std::string& what) {
  std::u32string out;
  out.reserve(text.size());
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(text.size());
  while (left > 0) {
    utf8proc_int32_t c = 0;
    const auto n = utf8proc_iterate(p, left, &c);
    if (n < 0 || c < 0)
      fail_value("{} is not valid UTF-8 (at byte {})", what, text.size() - static_cast<size_t>(left));
    out += static_cast<char32_t>(c);
    p += n;
    left -= n;
  }
  return out;
}

void append_utf8(std::string& out, char32_t c) {
  utf8proc_uint8_t buffer[4];
  const auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(c), buffer);
  out.append(reinterpret_cast<const char*>(buffer), static_cast<size_t>(n));
}

std::string encode_utf8(const std::u32string& text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) append_utf8(out, c);
  return out;
}

// ---- the steps ---------------------------------------------------------------------------------------------

std::u32string fix_text(const std::u32string& input) {
  // ftfy leaves HTML alone in text that looks like HTML, and repeats its fixes until nothing changes.
  const bool unescape = input.find('<') == std::u32string::npos;
  std::u32string text = input;
  for (int round = 0; round < 16; ++round) {
    const std::u32string before = text;
    if (unescape) text = ftfy_unescape_html(text);
    text = remove_terminal_escapes(fix_characters(text));
    text.erase(std::remove_if(text.begin(), text.end(), is_removed_control), text.end());
    text = normalize(text, 0);  // NFC
    if (text == before) break;
  }
  return text;
}

std::u32string html_unescape(const std::u32string& text) {
  if (text.find('&') == std::u32string::npos) return text;
  return replace_references(text, [](const std::u32string& t, size_t i, std::u32string& out) -> size_t {
    const size_t j = i + 1;
    if (j < t.size() && t[j] == '#') {  // #[0-9]+;? or #[xX][0-9a-fA-F]+;?
      const bool hex = j + 1 < t.size() && (t[j + 1] == 'x' || t[j + 1] == 'X');
      const size_t begin = j + (hex ? 2 : 1);
      size_t end = begin;
      while (end < t.size() && (hex ? is_hex(t[end]) : is_ascii_digit(t[end]))) ++end;
      if (end == begin) return 0;  // "&#" or "&#x" without digits: not a reference
      out += numeric_reference(t.substr(begin, end - begin), hex ? 16 : 10);
      return end + (end < t.size() && t[end] == ';' ? 1 : 0) - i;
    }
    // [^\t\n\f <&#;]{1,32};?
    const std::u32string stops = U"\t\n\f <&#;";
    size_t end = j;
    while (end < t.size() && end - j < 32 && stops.find(t[end]) == std::u32string::npos) ++end;
    if (end == j) return 0;
    if (end < t.size() && t[end] == ';') ++end;
    out += named_reference(t.substr(j, end - j));
    return end - i;
  });
}

bool is_space(char32_t c) {
  if (category(c) == UTF8PROC_CATEGORY_ZS) return true;
  const auto bidi = utf8proc_get_property(static_cast<utf8proc_int32_t>(c))->bidi_class;
  return bidi == UTF8PROC_BIDI_CLASS_WS || bidi == UTF8PROC_BIDI_CLASS_B || bidi == UTF8PROC_BIDI_CLASS_S;
}

std::u32string strip(const std::u32string& text) {
  size_t begin = 0, end = text.size();
  while (begin < end && is_space(text[begin])) ++begin;
  while (end > begin && is_space(text[end - 1])) --end;
  return text.substr(begin, end - begin);
}

std::u32string whitespace_clean(const std::u32string& text) {
  std::u32string out;
  out.reserve(text.size());
  bool in_space = false;
  for (char32_t c : text) {
    const bool space = is_space(c);
    if (!space) out += c;
    else if (!in_space) out += ' ';
    in_space = space;
  }
  return strip(out);
}

std::u32string lower(const std::u32string& text) {
  std::u32string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char32_t c = text[i];
    if (c == 0x130) {  // SpecialCasing: İ -> i + COMBINING DOT ABOVE
      out += U"i\u0307";
    } else if (c == 0x3A3) {  // Σ: final form after a cased letter that does not continue with one
      size_t j = i;
      while (j > 0 && is_case_ignorable(text[j - 1])) --j;
      bool final_sigma = j > 0 && is_cased(text[j - 1]);
      if (final_sigma) {
        size_t k = i + 1;
        while (k < text.size() && is_case_ignorable(text[k])) ++k;
        final_sigma = k == text.size() || !is_cased(text[k]);
      }
      out += final_sigma ? char32_t{0x3C2} : char32_t{0x3C3};
    } else {
      out += simple_lower(c);
    }
  }
  return out;
}

std::vector<std::u32string> pretokenize(const std::u32string& text) {
  std::vector<std::u32string> tokens;
  size_t i = 0;
  const size_t n = text.size();
  auto take = [&](size_t length) {
    tokens.push_back(text.substr(i, length));
    i += length;
  };
  while (i < n) {
    const char32_t c = text[i];
    if (starts_with(text, i, "<|startoftext|>")) {
      take(15);
    } else if (starts_with(text, i, "<|endoftext|>")) {
      take(13);
    } else if (const size_t length = contraction_length(text, i)) {
      take(length);
    } else if (is_letter(c)) {
      size_t j = i;
      while (j < n && is_letter(text[j])) ++j;
      take(j - i);
    } else if (is_number(c)) {
      take(1);
    } else if (matches_nothing(c)) {
      ++i;
    } else {  // [^\s\p{L}\p{N}]+
      size_t j = i;
      while (j < n && !matches_nothing(text[j]) && !is_letter(text[j]) && !is_number(text[j])) ++j;
      take(j - i);
    }
  }
  return tokens;
}

std::u32string clean(const std::u32string& text) {
  return lower(whitespace_clean(strip(html_unescape(html_unescape(fix_text(text))))));
}

}  // namespace kclip::clip_text
