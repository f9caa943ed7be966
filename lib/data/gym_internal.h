// Internals of the embedded gym (not part of the public API): the portable random number
// generator, the word lists, the fixed synthetic world, and the task definitions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tlmoe::gym::detail {

// ---- random numbers -----------------------------------------------------------------------
// SplitMix64 (seeding, hashing) and xoshiro256** (streams), with our own bounded integers and
// shuffle, so the output is identical on every standard library and platform.

std::uint64_t splitmix64(std::uint64_t& state);
std::uint64_t fnv1a64(std::string_view bytes);
// Mixes a list of values into one seed (order matters).
std::uint64_t derive_seed(std::initializer_list<std::uint64_t> parts);

class Rng {
 public:
  explicit Rng(std::uint64_t seed);
  std::uint64_t next();
  // Uniform in [0, n); n > 0. Unbiased (rejection of the short last interval).
  std::uint64_t below(std::uint64_t n);
  // Uniform in [lo, hi], inclusive.
  int range(int lo, int hi);
  // True with probability num/den.
  bool chance(int num, int den);
  template <class T>
  const T& pick(const std::vector<T>& v) {
    return v[static_cast<std::size_t>(below(v.size()))];
  }
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (std::size_t i = v.size(); i > 1; --i) {
      std::size_t j = static_cast<std::size_t>(below(i));
      std::swap(v[i - 1], v[j]);
    }
  }
  // `n` distinct indices in [0, size), in random order; n <= size.
  std::vector<std::size_t> distinct(std::size_t n, std::size_t size);

 private:
  std::uint64_t s_[4];
};

// ---- word lists ---------------------------------------------------------------------------

struct Verb {
  std::string base, past;
};

struct TopicDomain {
  std::string name;                // e.g. "sports"
  std::vector<std::string> words;  // nouns found only in this domain
};

struct Lexicon {
  std::vector<std::string> objects;     // concrete nouns (singular)
  std::vector<std::string> roles;       // professions
  std::vector<Verb> verbs;              // transitive verbs
  std::vector<std::string> adjectives;  // neutral adjectives (no colour, no sentiment)
  std::vector<std::string> positive;    // sentiment lexicon
  std::vector<std::string> negative;
  std::vector<std::string> colours;
  std::vector<std::string> animals;
  std::vector<std::string> places;   // "at the <place>"
  std::vector<std::string> times;    // time phrases, e.g. "last week"
  std::vector<TopicDomain> domains;  // topic vocabularies
  const TopicDomain& domain(std::string_view name) const;
};

// The lexicon, checked once: the word classes that tasks test for are pairwise disjoint.
const Lexicon& lexicon();

std::string plural(const std::string& noun);
std::string third_person(const std::string& verb);  // "carry" -> "carries"
std::string a_or_an(const std::string& word);       // "a" or "an"
std::string number_words(int n);                    // 0..999: "one hundred forty two"
std::string join(const std::vector<std::string>& words, std::string_view sep = " ");
std::vector<std::string> split_words(const std::string& s);

// ---- the synthetic world ------------------------------------------------------------------
// One fixed world of invented people, cities, countries, rivers and companies. It is built
// from a constant internal seed (kWorldSeed), NOT from --seed, so every gym shares the same
// facts: knowledge learned on one task (or one gym) stays true on every other.

inline constexpr std::uint64_t kWorldSeed = 0x71A7E5EEDULL;

struct Person {
  std::string name;  // "first last"
  std::size_t city, employer;
  std::string job, colour, pet;
};
struct City {
  std::string name;
  std::size_t country;
  std::string river;
};
struct Company {
  std::string name;  // two words, e.g. "brenvik works"
  std::size_t founder, hq;
  std::string product;  // plural noun
};

struct World {
  std::vector<std::string> countries;
  std::vector<City> cities;
  std::vector<Person> people;
  std::vector<Company> companies;
};

const World& world();

// ---- tasks --------------------------------------------------------------------------------

struct Example {
  std::string input;
  std::vector<std::string> outputs;  // first = the canonical answer
};

// Draws one example. For classification tasks `label` is the index of the label the example
// must have; otherwise it is -1.
using Generator = std::function<Example(Rng& rng, int label)>;

struct TaskDef {
  std::string name, category, sub_category, metric, partition, instruction;
  std::vector<std::string> labels;  // non-empty = classification
  std::size_t n_test = 0;
  std::size_t n_pool = 0;        // examples besides the test set (k-shot train/dev come from here)
  std::size_t n_full_train = 0;  // train partition only: first n_full_train of the pool;
                                 // the rest of the pool is the full dev set
  Generator gen;
};

// All task definitions, in a fixed order, names checked (charset, uniqueness, no "_full_").
std::vector<TaskDef> task_defs();

}  // namespace tlmoe::gym::detail
