// The gym's random numbers, word lists, text helpers and the fixed synthetic world.
#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>

#include "data/gym_internal.h"

namespace tlmoe::gym::detail {

// ---- random numbers -----------------------------------------------------------------------

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::uint64_t fnv1a64(std::string_view bytes) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

std::uint64_t derive_seed(std::initializer_list<std::uint64_t> parts) {
  std::uint64_t h = 0x5EEDF00DCAFEBEEFULL;
  for (std::uint64_t p : parts) {
    std::uint64_t s = h ^ p;
    h = splitmix64(s);
  }
  return h;
}

Rng::Rng(std::uint64_t seed) {
  std::uint64_t st = seed;
  for (auto& w : s_) w = splitmix64(st);
}

std::uint64_t Rng::next() {
  auto rotl = [](std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); };
  const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

std::uint64_t Rng::below(std::uint64_t n) {
  if (n == 0) throw std::logic_error("gym Rng::below(0)");
  // Reject the values of the last, incomplete block of n so every residue is equally likely.
  const std::uint64_t threshold = (0 - n) % n;  // = 2^64 mod n
  for (;;) {
    std::uint64_t r = next();
    if (r >= threshold) return r % n;
  }
}

int Rng::range(int lo, int hi) {
  return lo + static_cast<int>(below(static_cast<std::uint64_t>(hi - lo) + 1));
}

bool Rng::chance(int num, int den) {
  return below(static_cast<std::uint64_t>(den)) < static_cast<std::uint64_t>(num);
}

std::vector<std::size_t> Rng::distinct(std::size_t n, std::size_t size) {
  if (n > size) throw std::logic_error("gym Rng::distinct: n > size");
  std::vector<std::size_t> idx(size);
  for (std::size_t i = 0; i < size; ++i) idx[i] = i;
  // Partial Fisher-Yates from the front.
  for (std::size_t i = 0; i < n; ++i) {
    std::size_t j = i + static_cast<std::size_t>(below(size - i));
    std::swap(idx[i], idx[j]);
  }
  idx.resize(n);
  return idx;
}

// ---- word lists ---------------------------------------------------------------------------

namespace {

std::vector<std::string> words_of(const char* text) { return split_words(text); }

Lexicon build_lexicon() {
  Lexicon L;
  L.objects = words_of(
      "lamp wagon basket box letter window table chair boat coat hat book key bottle cup bell drum "
      "rope ladder bench fence candle mirror shelf barrel blanket bucket cart door kettle knife hammer "
      "jar jacket pillow ribbon saddle scarf shovel spoon stool tent vase wheel whistle brush glass "
      "clock compass crate flag helmet lantern needle plate pot quilt sack sail sword torch tray trunk "
      "umbrella wallet basin cabinet carpet lock pencil ring net bowl anchor");
  L.roles = words_of(
      "farmer baker teacher sailor doctor painter miner tailor pilot nurse judge clerk guard hunter "
      "weaver potter builder driver writer student soldier cook gardener fisher carpenter plumber "
      "librarian mechanic shepherd jeweler butcher mason poet lawyer dancer architect");
  const char* verbs[][2] = {
      {"carry", "carried"},   {"open", "opened"},  {"paint", "painted"},   {"build", "built"},
      {"repair", "repaired"}, {"find", "found"},   {"buy", "bought"},      {"sell", "sold"},
      {"clean", "cleaned"},   {"move", "moved"},   {"push", "pushed"},     {"pull", "pulled"},
      {"hide", "hid"},        {"lift", "lifted"},  {"wash", "washed"},     {"fix", "fixed"},
      {"bring", "brought"},   {"take", "took"},    {"watch", "watched"},   {"draw", "drew"},
      {"hold", "held"},       {"break", "broke"},  {"throw", "threw"},     {"catch", "caught"},
      {"fill", "filled"},     {"drop", "dropped"}, {"borrow", "borrowed"}, {"keep", "kept"},
      {"polish", "polished"}, {"fold", "folded"},  {"steal", "stole"},     {"order", "ordered"},
      {"return", "returned"}, {"mend", "mended"},  {"lose", "lost"},       {"weigh", "weighed"},
      {"wrap", "wrapped"},    {"pack", "packed"},  {"load", "loaded"},     {"carve", "carved"}};
  for (const auto& v : verbs) L.verbs.push_back({v[0], v[1]});
  L.adjectives = words_of(
      "old new small large tall heavy round square wooden narrow wide long empty quiet loud warm cold "
      "dry wet soft hard plain thin thick ancient tiny huge simple strange rare common smooth rough "
      "sharp dark shallow deep short flat spare hollow famous spotted striped curved");
  L.positive = words_of(
      "wonderful lovely excellent delightful pleasant brilliant charming cheerful superb splendid "
      "graceful friendly marvelous joyful perfect fantastic gentle elegant generous beautiful");
  L.negative = words_of(
      "awful terrible dreadful horrible nasty gloomy miserable rotten dull ugly filthy rude bitter "
      "clumsy boring harsh shabby grim dismal hideous");
  L.colours = words_of(
      "red blue green yellow purple orange white black brown grey pink silver golden violet crimson amber");
  L.animals = words_of(
      "dog cat horse goat sheep rabbit fox wolf bear deer owl eagle duck goose mouse frog tiger lion "
      "otter badger hen crow swan snake turtle whale dolphin beaver parrot camel donkey lizard falcon "
      "pigeon hedgehog");
  L.places = words_of(
      "mill station school library chapel farm plaza bakery forest hill lake valley village castle "
      "beach field shop museum garden workshop cellar barn pier orchard meadow tavern");
  L.times = {"yesterday",      "today",      "this morning", "last week",   "at noon",
             "in the evening", "on monday",  "on friday",    "last winter", "at dawn",
             "before sunset",  "last night", "on sunday",    "last summer", "at midnight"};
  L.domains = {
      {"sports", words_of("match goal team coach referee stadium ball league score player trophy race "
                          "tournament season champion")},
      {"food", words_of("soup bread cheese recipe oven pepper salad dinner flavor pastry onion butter "
                        "meal sauce kitchen")},
      {"music", words_of("song guitar melody concert choir piano rhythm drummer album chorus violin band "
                         "ballad tune orchestra")},
      {"weather", words_of("rain storm cloud wind thunder snow fog forecast sunshine breeze frost hail "
                           "drizzle temperature lightning")},
      {"science", words_of("experiment laboratory molecule telescope theory researcher sample microscope "
                           "atom planet equation hypothesis physics chemistry measurement")},
      {"travel", words_of("journey airport ticket passport luggage hotel voyage ferry tourist suitcase "
                          "border itinerary cruise railway departure")},
      {"business", words_of("profit invoice customer contract shares budget trade salary bank investor "
                            "price loan revenue tax merchant")},
      {"health", words_of("clinic medicine fever patient vaccine injury hospital therapy pulse diet cough "
                          "bandage illness surgeon symptom")},
  };

  // The tasks' labels rest on these classes being disjoint: check it once, loudly.
  std::map<std::string, std::string> owner;
  auto claim = [&](const std::vector<std::string>& words, const std::string& cls) {
    for (const auto& w : words) {
      auto [it, fresh] = owner.emplace(w, cls);
      if (!fresh && it->second != cls)
        throw std::logic_error("gym lexicon: '" + w + "' is in both " + it->second + " and " + cls);
      if (!fresh) throw std::logic_error("gym lexicon: '" + w + "' listed twice in " + cls);
    }
  };
  claim(L.objects, "objects");
  claim(L.roles, "roles");
  claim(L.adjectives, "adjectives");
  claim(L.positive, "positive");
  claim(L.negative, "negative");
  claim(L.colours, "colours");
  claim(L.animals, "animals");
  claim(L.places, "places");
  std::vector<std::string> verb_forms;
  for (const auto& v : L.verbs) {
    verb_forms.push_back(v.base);
    verb_forms.push_back(v.past);
  }
  claim(verb_forms, "verbs");
  for (const auto& d : L.domains) claim(d.words, "domain " + d.name);
  return L;
}

}  // namespace

const TopicDomain& Lexicon::domain(std::string_view name) const {
  for (const auto& d : domains)
    if (d.name == name) return d;
  throw std::logic_error("gym lexicon: no topic domain '" + std::string(name) + "'");
}

const Lexicon& lexicon() {
  static const Lexicon L = build_lexicon();
  return L;
}

// ---- text helpers -------------------------------------------------------------------------

namespace {
bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool is_vowel(char c) { return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u'; }
}  // namespace

std::string plural(const std::string& noun) {
  static const std::map<std::string, std::string> irregular = {
      {"knife", "knives"}, {"shelf", "shelves"}, {"scarf", "scarves"}, {"mouse", "mice"},
      {"goose", "geese"},  {"sheep", "sheep"},   {"deer", "deer"},     {"wolf", "wolves"}};
  if (auto it = irregular.find(noun); it != irregular.end()) return it->second;
  if (ends_with(noun, "s") || ends_with(noun, "x") || ends_with(noun, "ch") || ends_with(noun, "sh") ||
      ends_with(noun, "z"))
    return noun + "es";
  if (noun.size() >= 2 && noun.back() == 'y' && !is_vowel(noun[noun.size() - 2]))
    return noun.substr(0, noun.size() - 1) + "ies";
  return noun + "s";
}

std::string third_person(const std::string& verb) {
  if (verb.size() >= 2 && verb.back() == 'y' && !is_vowel(verb[verb.size() - 2]))
    return verb.substr(0, verb.size() - 1) + "ies";
  if (ends_with(verb, "s") || ends_with(verb, "x") || ends_with(verb, "ch") || ends_with(verb, "sh") ||
      ends_with(verb, "z") || ends_with(verb, "o"))
    return verb + "es";
  return verb + "s";
}

std::string a_or_an(const std::string& word) { return !word.empty() && is_vowel(word[0]) ? "an" : "a"; }

std::string number_words(int n) {
  static const char* small[] = {"zero",    "one",     "two",       "three",    "four",
                                "five",    "six",     "seven",     "eight",    "nine",
                                "ten",     "eleven",  "twelve",    "thirteen", "fourteen",
                                "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"};
  static const char* tens[] = {"",      "",      "twenty",  "thirty", "forty",
                               "fifty", "sixty", "seventy", "eighty", "ninety"};
  if (n < 0 || n > 999) throw std::logic_error("gym number_words: out of range");
  std::string out;
  if (n >= 100) {
    out = std::string(small[n / 100]) + " hundred";
    n %= 100;
    if (n == 0) return out;
    out += " ";
  }
  if (n < 20) return out + small[n];
  out += tens[n / 10];
  if (n % 10) out += std::string(" ") + small[n % 10];
  return out;
}

std::string join(const std::vector<std::string>& words, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < words.size(); ++i) {
    if (i) out += sep;
    out += words[i];
  }
  return out;
}

std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == ' ' || c == '\n' || c == '\t') {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

// ---- the synthetic world ------------------------------------------------------------------

namespace {

// Pronounceable invented words from syllables. `used` holds every word taken so far (the
// lexicon included), so no two entities share a word and none is an English word we use.
class NameMaker {
 public:
  NameMaker(Rng& rng, std::set<std::string>& used) : rng_(rng), used_(used) {}

  std::string fresh(int syllables, bool closed, const std::vector<std::string>& suffixes = {}) {
    for (int attempt = 0; attempt < 100000; ++attempt) {
      std::string w;
      for (int i = 0; i < syllables; ++i) {
        w += rng_.pick(onsets_);
        w += rng_.pick(vowels_);
      }
      if (closed) w += rng_.pick(codas_);
      if (!suffixes.empty()) w += rng_.pick(suffixes);
      if (w.size() < 3 || w.size() > 11) continue;
      if (used_.insert(w).second) return w;
    }
    throw std::logic_error("gym world: ran out of fresh names");
  }

 private:
  Rng& rng_;
  std::set<std::string>& used_;
  const std::vector<std::string> onsets_ = {"b", "br", "d",  "dr", "f", "g", "gr", "h",
                                            "j", "k",  "kr", "l",  "m", "n", "p",  "r",
                                            "s", "st", "t",  "tr", "v", "z", "th", "sh"};
  const std::vector<std::string> vowels_ = {"a", "e", "i", "o", "u", "a", "e", "o", "ai", "ea", "io"};
  const std::vector<std::string> codas_ = {"n", "r", "l", "s", "k", "m", "nd", "rt", "lt", "sk", "th", "x"};
};

World build_world() {
  const Lexicon& L = lexicon();
  Rng rng(kWorldSeed);
  std::set<std::string> used;
  for (const auto* list :
       {&L.objects, &L.roles, &L.adjectives, &L.positive, &L.negative, &L.colours, &L.animals, &L.places})
    used.insert(list->begin(), list->end());
  for (const auto& d : L.domains) used.insert(d.words.begin(), d.words.end());
  for (const auto& v : L.verbs) {
    used.insert(v.base);
    used.insert(v.past);
  }
  NameMaker names(rng, used);

  World w;
  for (int i = 0; i < 20; ++i)
    w.countries.push_back(names.fresh(2, false, {"ria", "nia", "land", "mark", "via", "dora"}));
  std::vector<std::string> rivers;
  for (int i = 0; i < 50; ++i) rivers.push_back(names.fresh(1 + static_cast<int>(rng.below(2)), true));
  for (int i = 0; i < 150; ++i) {
    City c;
    c.name = names.fresh(1 + static_cast<int>(rng.below(2)), true,
                         {"ford", "holm", "by", "wick", "mouth", "stead", "vale", "haven", "port", "mere"});
    // Every country gets at least one city; the rest are spread at random.
    c.country = i < 20 ? static_cast<std::size_t>(i) : static_cast<std::size_t>(rng.below(20));
    c.river = rng.pick(rivers);
    w.cities.push_back(c);
  }
  std::vector<std::string> firsts, lasts;
  for (int i = 0; i < 50; ++i) firsts.push_back(names.fresh(2, rng.chance(1, 2)));
  for (int i = 0; i < 60; ++i) lasts.push_back(names.fresh(1 + static_cast<int>(rng.below(2)), true));
  std::vector<std::size_t> pairs = rng.distinct(600, firsts.size() * lasts.size());
  for (std::size_t p : pairs) {
    Person person;
    person.name = firsts[p / lasts.size()] + " " + lasts[p % lasts.size()];
    person.city = static_cast<std::size_t>(rng.below(w.cities.size()));
    person.job = rng.pick(L.roles);
    person.colour = rng.pick(L.colours);
    person.pet = rng.pick(L.animals);
    person.employer = 0;  // set below, once the companies exist
    w.people.push_back(person);
  }
  const std::vector<std::string> company_kinds = {"works",   "labs",  "mills",  "foundry",
                                                  "traders", "forge", "supply", "makers"};
  std::vector<std::size_t> founders = rng.distinct(150, w.people.size());
  for (std::size_t i = 0; i < 150; ++i) {
    Company c;
    c.name = names.fresh(2, rng.chance(1, 2));
    c.name += " " + rng.pick(company_kinds);
    c.founder = founders[i];
    c.hq = static_cast<std::size_t>(rng.below(w.cities.size()));
    c.product = plural(rng.pick(L.objects));
    w.companies.push_back(c);
  }
  for (auto& p : w.people) p.employer = static_cast<std::size_t>(rng.below(w.companies.size()));
  return w;
}

}  // namespace

const World& world() {
  static const World w = build_world();
  return w;
}

}  // namespace tlmoe::gym::detail
