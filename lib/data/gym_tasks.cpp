// The gym's task definitions: one generator per task, grouped by skill family. docs/gym.md
// describes every family; keep the two in step.
#include <algorithm>
#include <initializer_list>
#include <set>
#include <stdexcept>
#include <string_view>

#include "data/gym_internal.h"

namespace tlmoe::gym::detail {

namespace {

const Lexicon& L() { return lexicon(); }
const World& W() { return world(); }

// Concatenates left to right. Random draws must happen in a fixed order on every compiler, but
// C++ may evaluate the operands of a `+` chain (or the arguments of a call) in any order; the
// elements of a braced list are evaluated in order. So: at most one draw per `+` chain or call,
// otherwise draw into separate statements or build the string with cat({...}).
std::string cat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view p : parts) out.append(p);
  return out;
}

// ---- sentence material --------------------------------------------------------------------

std::string name_of(Rng& r) { return r.pick(W().people).name; }

// `n` distinct items of `v`.
std::vector<std::string> some(Rng& r, const std::vector<std::string>& v, std::size_t n) {
  std::vector<std::string> out;
  for (std::size_t i : r.distinct(n, v.size())) out.push_back(v[i]);
  return out;
}

std::vector<std::string> names_of(Rng& r, std::size_t n) {
  std::vector<std::string> out;
  for (std::size_t i : r.distinct(n, W().people.size())) out.push_back(W().people[i].name);
  return out;
}

// "<who> <verb> the [adj] <object> [at the <place>] [<time>]": the building block of most tasks.
struct Event {
  std::string who;
  Verb verb;
  std::string adj, object, place, time;

  std::string np() const { return "the " + (adj.empty() ? "" : adj + " ") + object; }
  std::string np_bare() const { return (adj.empty() ? "" : adj + " ") + object; }
  std::string at_place() const { return place.empty() ? "" : "at the " + place; }
  // Past tense clause without the final period.
  std::string clause() const { return with_tail(who + " " + verb.past + " " + np()); }
  std::string clause_present() const { return with_tail(who + " " + third_person(verb.base) + " " + np()); }
  std::string with_tail(std::string s) const {
    if (!place.empty()) s += " " + at_place();
    if (!time.empty()) s += " " + time;
    return s;
  }
};

// Each optional part is present with probability 1/2 unless forced on (1) or off (0); -1 = coin.
Event make_event(Rng& r, int adj = -1, int place = -1, int time = -1) {
  auto want = [&r](int flag) { return flag < 0 ? r.chance(1, 2) : flag == 1; };
  Event e;
  e.who = name_of(r);
  e.verb = r.pick(L().verbs);
  e.object = r.pick(L().objects);
  if (want(adj)) e.adj = r.pick(L().adjectives);
  if (want(place)) e.place = r.pick(L().places);
  if (want(time)) e.time = r.pick(L().times);
  return e;
}

// `n` events with distinct people, objects, places and times (for reading comprehension).
std::vector<Event> distinct_events(Rng& r, std::size_t n, bool places, bool times) {
  auto who = names_of(r, n);
  auto objects = some(r, L().objects, n);
  auto pl = some(r, L().places, n);
  auto tm = some(r, L().times, n);
  std::vector<Event> out;
  for (std::size_t i = 0; i < n; ++i) {
    Event e;
    e.who = who[i];
    e.verb = r.pick(L().verbs);
    e.object = objects[i];
    if (r.chance(1, 2)) e.adj = r.pick(L().adjectives);
    if (places) e.place = pl[i];
    if (times) e.time = tm[i];
    out.push_back(e);
  }
  return out;
}

// A few random content words (for the string transformation tasks).
std::string content_word(Rng& r) {
  switch (r.below(5)) {
    case 0:
      return r.pick(L().objects);
    case 1:
      return r.pick(L().adjectives);
    case 2:
      return r.pick(L().animals);
    case 3:
      return r.pick(L().colours);
    default:
      return r.pick(L().places);
  }
}
std::vector<std::string> distinct_content_words(Rng& r, std::size_t n) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  while (out.size() < n) {
    std::string w = content_word(r);
    if (seen.insert(w).second) out.push_back(w);
  }
  return out;
}

const std::vector<std::string>& polarity_words(int label_positive_negative_neutral) {
  switch (label_positive_negative_neutral) {
    case 0:
      return L().positive;
    case 1:
      return L().negative;
    default:
      return L().adjectives;
  }
}

std::string topic_sentence(Rng& r, const TopicDomain& d) {
  auto w = some(r, d.words, 2);
  std::string who = name_of(r);
  switch (r.below(5)) {
    case 0:
      return who + " talked about the " + w[0] + " and the " + w[1] + " " + r.pick(L().times) + " .";
    case 1:
      return "the " + w[0] + " was " + r.pick(L().adjectives) + " , and everyone mentioned the " + w[1] +
             " .";
    case 2:
      return who + " wrote a note about the " + w[0] + " near the " + w[1] + " .";
    case 3:
      return "the " + w[0] + " and the " + w[1] + " surprised " + who + " " + r.pick(L().times) + " .";
    default:
      return cat({r.pick(L().times), " the ", w[0], " seemed ", r.pick(L().adjectives), " to ", who, " ."});
  }
}

Example ex(std::string input, std::vector<std::string> outputs) {
  return Example{std::move(input), std::move(outputs)};
}

// ---- task table helpers -------------------------------------------------------------------

const char* const kExtractive = "extractive";
const char* const kClassification = "classification";
const char* const kKnowledge = "world knowledge";
const char* const kArithmetic = "arithmetic";
const char* const kString = "string transformation";
const char* const kGeneration = "generation";

// Sizes: tasks whose inputs range over a large space get 80 test examples and a pool of 360
// (train partition: 320 full-train + 40 full-dev) or 160 (dev/test partitions: enough for 32
// shots, or 16 per class for up to 5 classes, in both train and dev). Tasks about the 150
// cities or companies of the world have only 150 distinct questions: 40 test + 110.
enum class Space { kLarge, kSmall150 };

struct Adder {
  std::vector<TaskDef>& defs;
  void operator()(std::string name, std::string category, std::string sub, std::string metric,
                  std::string partition, std::vector<std::string> labels, std::string instruction,
                  Generator gen, Space space = Space::kLarge) {
    TaskDef d;
    d.name = std::move(name);
    d.category = std::move(category);
    d.sub_category = std::move(sub);
    d.metric = std::move(metric);
    d.partition = std::move(partition);
    d.labels = std::move(labels);
    d.instruction = std::move(instruction);
    d.gen = std::move(gen);
    const bool upstream = d.partition == "train";
    if (space == Space::kSmall150) {
      d.n_test = 40;
      d.n_pool = 110;
      d.n_full_train = upstream ? 100 : 0;
    } else {
      d.n_test = 80;
      d.n_pool = upstream ? 360 : 160;
      d.n_full_train = upstream ? 320 : 0;
    }
    defs.push_back(std::move(d));
  }
};

// ---- extractive ---------------------------------------------------------------------------

// Spans found by a cue word or by markers.
void add_cue_spans(Adder& add) {
  add("clause_after_because", kExtractive, "cue span", "EM", "train", {},
      "Copy the part of the text that comes after the word \"because\".", [](Rng& r, int) {
        Event a = make_event(r, -1, -1, 0);
        std::string b;
        switch (r.below(3)) {
          case 0:
            b = make_event(r, -1, 0, 0).clause();
            break;
          case 1:
            b = cat({"the ", r.pick(L().objects), " was ", r.pick(L().adjectives)});
            break;
          default:
            b = cat({"the ", r.pick(L().places), " was ", r.pick(L().adjectives), " ", r.pick(L().times)});
        }
        return ex("text: " + a.clause() + " because " + b + " .", {b});
      });

  // The cue is a word occurring once in the sentence; the answer is the two words around it.
  auto cue_task = [](bool after) {
    return [after](Rng& r, int) {
      for (;;) {
        Event e = make_event(r);
        auto tok = split_words(e.clause());
        std::size_t i = static_cast<std::size_t>(r.below(tok.size()));
        if (std::count(tok.begin(), tok.end(), tok[i]) != 1) continue;
        if (after && i + 2 >= tok.size()) continue;
        if (!after && i < 2) continue;
        std::string answer = after ? tok[i + 1] + " " + tok[i + 2] : tok[i - 2] + " " + tok[i - 1];
        std::string text = join(tok) + " .";
        return after ? ex("cue: " + tok[i] + " text: " + text, {answer})
                     : ex("keyword: " + tok[i] + " | sentence: " + text, {answer});
      }
    };
  };
  add("words_after_cue", kExtractive, "cue span", "EM", "train", {},
      "Copy the two words that follow the cue word in the text.", cue_task(true));
  add("words_before_cue", kExtractive, "cue span", "EM", "dev", {},
      "Write the two words that come right before the keyword in the sentence.", cue_task(false));

  // One span of an event sentence is set off by markers.
  auto marked = [](Rng& r, const std::string& open, const std::string& close, std::string* span) {
    Event e = make_event(r, -1, 1, -1);
    std::string who = e.who, np = e.np(), place = "the " + e.place;
    switch (r.below(3)) {
      case 0:
        *span = who;
        who = open + " " + who + " " + close;
        break;
      case 1:
        *span = np;
        np = open + " " + np + " " + close;
        break;
      default:
        *span = place;
        place = open + " " + place + " " + close;
    }
    std::string s = who + " " + e.verb.past + " " + np + " at " + place;
    if (!e.time.empty()) s += " " + e.time;
    return s + " .";
  };
  add("bracket_span", kExtractive, "marked span", "EM", "train", {},
      "Return the words written inside the square brackets.", [marked](Rng& r, int) {
        std::string span;
        std::string s = marked(r, "[", "]", &span);
        return ex("sentence: " + s, {span});
      });
  add("star_span", kExtractive, "marked span", "EM", "test", {},
      "The passage has one phrase between two stars; copy that phrase.", [marked](Rng& r, int) {
        std::string span;
        std::string s = marked(r, "*", "*", &span);
        std::string other = make_event(r).clause() + " .";
        return ex("passage: " + (r.chance(1, 2) ? other + " " + s : s + " " + other), {span});
      });
}

// Entities of a sentence, and reading comprehension over a short story.
void add_entities_and_reading(Adder& add) {
  add("extract_person", kExtractive, "entity extraction", "EM", "train", {},
      "Return the name of the person mentioned in the sentence.", [](Rng& r, int) {
        Event e = make_event(r, -1, 1, 0);
        std::string s;
        switch (r.below(3)) {
          case 0:
            s = r.pick(L().times) + " , " + e.clause() + " .";
            break;
          case 1:
            s = e.np() + " was " + e.verb.past + " by " + e.who + " " + r.pick(L().times) + " .";
            break;
          default:
            s = "at the " + e.place + " , " + e.who + " " + e.verb.past + " " + e.np() + " .";
        }
        return ex("sentence: " + s, {e.who});
      });
  add("extract_number", kExtractive, "entity extraction", "EM", "train", {},
      "Return the number that appears in the sentence.", [](Rng& r, int) {
        int n = r.range(2, 999);
        std::string things = plural(r.pick(L().objects)), num = std::to_string(n);
        std::string s;
        switch (r.below(3)) {
          case 0:
            s = cat({name_of(r), " ", r.pick(L().verbs).past, " ", num, " ", things, " at the ",
                     r.pick(L().places), " ."});
            break;
          case 1:
            s = cat({"there were ", num, " ", things, " in the ", r.pick(L().places), " ", r.pick(L().times),
                     " ."});
            break;
          default:
            s = cat({"the stall at the ", r.pick(L().places), " sold ", num, " ", r.pick(L().adjectives), " ",
                     things, " ."});
            break;
        }
        return ex("sentence: " + s, {num});
      });
  add("extract_animal", kExtractive, "entity extraction", "EM", "test", {},
      "Name the animal that the sentence talks about.", [](Rng& r, int) {
        std::string animal = r.pick(L().animals), s;
        switch (r.below(3)) {
          case 0:
            s = cat({name_of(r), " saw ", a_or_an(animal), " ", animal, " near the ", r.pick(L().places), " ",
                     r.pick(L().times), " ."});
            break;
          case 1:
            s = cat(
                {"the ", r.pick(L().adjectives), " ", animal, " slept in the ", r.pick(L().places), " ."});
            break;
          default:
            s = make_event(r, -1, 0, 0).clause() + " while " + a_or_an(animal) + " " + animal + " watched .";
        }
        return ex("question: which animal is mentioned ? sentence: " + s, {animal});
      });

  auto story = [](const std::vector<Event>& events, bool time_first) {
    std::vector<std::string> sentences;
    for (const auto& e : events) {
      if (time_first) {
        Event copy = e;
        copy.time.clear();
        sentences.push_back(e.time + " , " + copy.clause() + " .");
      } else {
        sentences.push_back(e.clause() + " .");
      }
    }
    return join(sentences);
  };
  add("rc_who", kExtractive, "reading comprehension", "QA-F1", "train", {},
      "Answer the question with the name of the person, copied from the context.", [story](Rng& r, int) {
        auto ev = distinct_events(r, static_cast<std::size_t>(r.range(2, 4)), true, false);
        const Event& q = ev[static_cast<std::size_t>(r.below(ev.size()))];
        return ex("question: who " + q.verb.past + " " + q.np() + " ? context: " + story(ev, false), {q.who});
      });
  add("rc_what", kExtractive, "reading comprehension", "QA-F1", "train", {},
      "Answer the question with the object, copied from the context.", [story](Rng& r, int) {
        auto ev = distinct_events(r, static_cast<std::size_t>(r.range(2, 4)), true, false);
        const Event& q = ev[static_cast<std::size_t>(r.below(ev.size()))];
        return ex("question: what did " + q.who + " " + q.verb.base + " ? context: " + story(ev, false),
                  {q.np(), q.np_bare()});
      });
  add("rc_where", kExtractive, "reading comprehension", "QA-F1", "train", {},
      "Answer the question with the place, copied from the context.", [story](Rng& r, int) {
        auto ev = distinct_events(r, static_cast<std::size_t>(r.range(2, 4)), true, false);
        const Event& q = ev[static_cast<std::size_t>(r.below(ev.size()))];
        return ex("question: where did " + q.who + " " + q.verb.base + " " + q.np() +
                      " ? context: " + story(ev, false),
                  {"the " + q.place, q.at_place()});
      });
  add("rc_when", kExtractive, "reading comprehension", "QA-F1", "dev", {},
      "Answer the question with the time phrase from the context.", [story](Rng& r, int) {
        auto ev = distinct_events(r, static_cast<std::size_t>(r.range(2, 4)), false, true);
        const Event& q = ev[static_cast<std::size_t>(r.below(ev.size()))];
        return ex("question: when did " + q.who + " " + q.verb.base + " " + q.np() +
                      " ? context: " + story(ev, true),
                  {q.time});
      });
  add("rc_owner", kExtractive, "reading comprehension", "QA-F1", "test", {},
      "Read the context and say who owns the object asked about.", [](Rng& r, int) {
        auto ev = distinct_events(r, static_cast<std::size_t>(r.range(2, 4)), false, false);
        std::vector<std::string> sentences;
        for (const auto& e : ev) sentences.push_back(e.who + " owns " + e.np() + " .");
        const Event& q = ev[static_cast<std::size_t>(r.below(ev.size()))];
        return ex("context: " + join(sentences) + " question: who owns " + q.np() + " ?", {q.who});
      });
}

void add_extractive(Adder& add) {
  add_cue_spans(add);
  add_entities_and_reading(add);
}

// ---- classification -----------------------------------------------------------------------

// Sentiment and topic.
void add_sentiment_and_topic(Adder& add) {
  add("sentiment_lexicon", kClassification, "sentiment", "Classification-F1", "train",
      {"positive", "negative"}, "Is the opinion in the sentence positive or negative?",
      [](Rng& r, int label) {
        std::string w = r.pick(polarity_words(label)), o = r.pick(L().objects), s;
        switch (r.below(4)) {
          case 0:
            s = name_of(r) + " said the " + o + " was " + w + " .";
            break;
          case 1:
            s = cat({"the ", r.pick(L().adjectives), " ", o, " at the ", r.pick(L().places), " looked ", w,
                     " ", r.pick(L().times), " ."});
            break;
          case 2:
            s = cat(
                {name_of(r), " found ", a_or_an(w), " ", w, " ", o, " in the ", r.pick(L().places), " ."});
            break;
          default:
            s = "everyone agreed that the " + r.pick(L().places) + " was " + w + " .";
            break;
        }
        return ex("sentence: " + s, {label == 0 ? "positive" : "negative"});
      });
  add("review_polarity", kClassification, "sentiment", "Classification-F1", "train", {"good", "bad"},
      "Label the product review as good or bad.", [](Rng& r, int label) {
        std::string w = r.pick(polarity_words(label)), o = r.pick(L().objects);
        std::string company = r.pick(W().companies).name, s;
        switch (r.below(3)) {
          case 0:
            s = "the " + o + " i bought from " + company + " is " + w + " .";
            break;
          case 1:
            s = company + " sent me " + a_or_an(o) + " " + o + " . it was " + w + " and " +
                r.pick(L().adjectives) + " .";
            break;
          default:
            s = cat({w, " service at the ", r.pick(L().places), " , the ", o, " arrived ", r.pick(L().times),
                     " ."});
            break;
        }
        return ex("review: " + s, {label == 0 ? "good" : "bad"});
      });
  add("mood_three", kClassification, "sentiment", "Classification-F1", "train", {"happy", "sad", "neutral"},
      "Is the mood of the sentence happy, sad or neutral?", [](Rng& r, int label) {
        static const char* labels[] = {"happy", "sad", "neutral"};
        std::string w = r.pick(polarity_words(label)), s;
        if (r.chance(1, 2))
          s = cat({name_of(r), " felt the ", r.pick(L().objects), " was ", w, " ."});
        else
          s = cat({r.pick(L().times), " the ", r.pick(L().places), " seemed ", w, " to ", name_of(r), " ."});
        return ex("sentence: " + s, {labels[label]});
      });
  add("customer_opinion", kClassification, "sentiment", "Classification-F1", "test",
      {"favourable", "unfavourable"}, "Decide whether the customer's opinion is favourable or unfavourable.",
      [](Rng& r, int label) {
        std::string w = r.pick(polarity_words(label)), s;
        if (r.chance(1, 2))
          s = cat({"my ", r.pick(L().objects), " from ", r.pick(W().companies).name, " is truly ", w, " ."});
        else
          s = cat({"the staff at the ", r.pick(L().places), " were ", w, " and the ", r.pick(L().objects),
                   " was ", r.pick(L().adjectives), " ."});
        return ex("opinion: " + s, {label == 0 ? "favourable" : "unfavourable"});
      });

  auto topic_task = [](std::vector<std::string> domains, std::vector<std::string> labels,
                       std::string prefix) {
    return [domains, labels, prefix](Rng& r, int label) {
      const auto i = static_cast<std::size_t>(label);
      return ex(prefix + topic_sentence(r, L().domain(domains[i])), {labels[i]});
    };
  };
  add("topic_four", kClassification, "topic", "Classification-F1", "train",
      {"sports", "food", "music", "weather"}, "What is the text about: sports, food, music or weather?",
      topic_task({"sports", "food", "music", "weather"}, {"sports", "food", "music", "weather"}, "text: "));
  add("topic_news", kClassification, "topic", "Classification-F1", "train",
      {"science", "travel", "business", "health"},
      "Classify the news article by topic: science, travel, business or health.",
      topic_task({"science", "travel", "business", "health"}, {"science", "travel", "business", "health"},
                 "article: "));
  add("topic_headline", kClassification, "topic", "Classification-F1", "test",
      {"athletics", "cooking", "research", "finance"},
      "Which section does the headline belong to: athletics, cooking, research or finance?",
      topic_task({"sports", "food", "science", "business"}, {"athletics", "cooking", "research", "finance"},
                 "headline: "));
}

// Word detection and inference.
void add_detection_and_inference(Adder& add) {
  // Word detection: the same sentence frames with an animal (or colour) or an ordinary word.
  add("animal_detect", kClassification, "word detection", "Classification-F1", "train", {"yes", "no"},
      "Does the sentence mention an animal? Answer yes or no.", [](Rng& r, int label) {
        std::string x = label == 0 ? r.pick(L().animals) : r.pick(L().objects), s;
        switch (r.below(3)) {
          case 0:
            s = cat({name_of(r), " saw the ", r.pick(L().adjectives), " ", x, " near the ",
                     r.pick(L().places), " ."});
            break;
          case 1:
            s = cat({"the ", x, " stayed in the ", r.pick(L().places), " ", r.pick(L().times), " ."});
            break;
          default:
            s = make_event(r, -1, 0, 0).clause() + " and looked at the " + x + " .";
            break;
        }
        return ex("question: does the sentence mention an animal ? sentence: " + s,
                  {label == 0 ? "yes" : "no"});
      });
  add("colour_detect", kClassification, "word detection", "Classification-F1", "train", {"true", "false"},
      "Say true if the text names a colour, false otherwise.", [](Rng& r, int label) {
        std::string c = label == 0 ? r.pick(L().colours) : r.pick(L().adjectives), s;
        if (r.chance(1, 2))
          s = cat({name_of(r), " ", r.pick(L().verbs).past, " the ", c, " ", r.pick(L().objects), " at the ",
                   r.pick(L().places), " ."});
        else
          s = cat({"the ", r.pick(L().objects), " in the ", r.pick(L().places), " was ", c, " ."});
        return ex("text: " + s, {label == 0 ? "true" : "false"});
      });
  add("animal_mention", kClassification, "word detection", "Classification-F1", "test", {"animal", "none"},
      "Answer animal if an animal appears in the input, none if no animal does.", [](Rng& r, int label) {
        std::string x = label == 0 ? r.pick(L().animals) : r.pick(L().objects), s;
        if (r.chance(1, 2))
          s = cat({name_of(r), " heard ", a_or_an(x), " ", x, " behind the ", r.pick(L().places), " ",
                   r.pick(L().times), " ."});
        else
          s = cat({"a ", r.pick(L().adjectives), " ", x, " was left in the ", r.pick(L().places), " by ",
                   name_of(r), " ."});
        return ex("input: " + s, {label == 0 ? "animal" : "none"});
      });

  // Inference: hypotheses derived from the premise by dropping modifiers (entailed), adding
  // information (neutral), negating or swapping a participant (contradiction / not entailed).
  auto entailed = [](Rng& r, const Event& p) {
    Event h = p;
    switch (r.below(3)) {
      case 0:
        h.adj.clear();
        break;
      case 1:
        h.place.clear();
        break;
      default:
        h.adj.clear();
        h.place.clear();
    }
    return h.clause() + " .";
  };
  auto not_entailed = [](Rng& r, const Event& p) {
    Event h = p;
    switch (r.below(4)) {
      case 0:
        while (h.who == p.who) h.who = name_of(r);
        break;
      case 1:
        while (h.object == p.object) h.object = r.pick(L().objects);
        break;
      case 2:
        while (h.place == p.place) h.place = r.pick(L().places);
        break;
      default:
        return p.who + " did not " + p.verb.base + " the " + p.object + " .";
    }
    return h.clause() + " .";
  };
  add("nli_two_way", kClassification, "inference", "ACC", "train", {"entailment", "not_entailment"},
      "Does the premise entail the hypothesis? Answer entailment or not_entailment.",
      [entailed, not_entailed](Rng& r, int label) {
        Event p = make_event(r, 1, 1, 0);
        std::string h = label == 0 ? entailed(r, p) : not_entailed(r, p);
        return ex("premise: " + p.clause() + " . hypothesis: " + h,
                  {label == 0 ? "entailment" : "not_entailment"});
      });
  add("nli_three_way", kClassification, "inference", "Classification-F1", "train",
      {"entailment", "neutral", "contradiction"},
      "Label the hypothesis as entailment, neutral or contradiction given the premise.",
      [entailed](Rng& r, int label) {
        static const char* labels[] = {"entailment", "neutral", "contradiction"};
        Event p = make_event(r, 1, -1, 0);
        std::string h;
        if (label == 0) {
          h = entailed(r, p);
        } else if (label == 1) {
          Event n = p;
          n.adj.clear();
          if (p.place.empty() && r.chance(1, 2))
            n.place = r.pick(L().places);
          else
            n.time = r.pick(L().times);
          h = n.clause() + " .";
        } else {
          h = r.chance(1, 2) ? p.who + " did not " + p.verb.base + " the " + p.object + " ."
                             : "nobody " + p.verb.past + " the " + p.object + " .";
        }
        return ex("premise: " + p.clause() + " . hypothesis: " + h, {labels[label]});
      });
  add("implication_yes_no", kClassification, "inference", "ACC", "test", {"yes", "no"},
      "Answer yes if the first sentence implies the second, no otherwise.",
      [entailed, not_entailed](Rng& r, int label) {
        Event p = make_event(r, 1, 1, 0);
        std::string h = label == 0 ? entailed(r, p) : not_entailed(r, p);
        return ex(
            "sentence1: " + p.clause() + " . sentence2: " + h + " question: does sentence1 imply sentence2 ?",
            {label == 0 ? "yes" : "no"});
      });
}

// Acceptability and regression.
void add_acceptability_and_regression(Adder& add) {
  // Acceptability: a well-formed event sentence or one broken in a way any speaker notices.
  auto broken = [](Rng& r, const Event& e, bool with_verb_form) {
    const std::string tail = e.with_tail("");
    const std::string np = e.np();
    for (;;) {
      switch (r.below(with_verb_form ? 5 : 4)) {
        case 0:
          return e.who + " " + e.verb.past + " " + e.np_bare() + " the" + tail;  // "lamp the"
        case 1:
          return e.who + " the " + e.verb.past + " " + e.np_bare() + tail;  // "the carried"
        case 2:
          return e.who + " " + e.verb.past + " the " + np + tail;  // "the the"
        case 3:
          if (e.adj.empty()) continue;
          return e.who + " " + e.verb.past + " the " + e.object + " " + e.adj + tail;  // "lamp old"
        default:
          return e.who + " " + e.verb.base + " " + np + tail;  // "mara carry"
      }
    }
  };
  add("word_order_check", kClassification, "acceptability", "ACC", "train", {"grammatical", "ungrammatical"},
      "Is the sentence grammatical or ungrammatical?", [broken](Rng& r, int label) {
        Event e = make_event(r);
        std::string s = label == 0 ? e.clause() : broken(r, e, false);
        return ex("sentence: " + s + " .", {label == 0 ? "grammatical" : "ungrammatical"});
      });
  add("acceptability", kClassification, "acceptability", "Matthew-Correlation", "test",
      {"acceptable", "unacceptable"}, "Would a native speaker find the sentence acceptable or unacceptable?",
      [broken](Rng& r, int label) {
        Event e = make_event(r);
        std::string s = label == 0 ? e.clause() : broken(r, e, true);
        return ex("sentence: " + s + " .", {label == 0 ? "acceptable" : "unacceptable"});
      });

  // Regression: a count of sentiment words, scored by Pearson correlation.
  add("positivity_rating", kClassification, "regression", "Pearson-Correlation", "train", {},
      "Rate the review from 0 to 5 by how many positive words it uses.", [](Rng& r, int) {
        int n = r.range(0, 5);
        auto objects = some(r, L().objects, 5);
        std::vector<bool> pos(5, false);
        for (std::size_t i : r.distinct(static_cast<std::size_t>(n), 5)) pos[i] = true;
        std::vector<std::string> parts;
        for (std::size_t i = 0; i < 5; ++i) {
          std::string adj =
              pos[i] ? r.pick(L().positive) : r.pick(r.chance(1, 2) ? L().negative : L().adjectives);
          parts.push_back("the " + objects[i] + " was " + adj);
        }
        return ex("review: " + join(parts, " , ") + " .", {std::to_string(n)});
      });
  add("negativity_score", kClassification, "regression", "Pearson-Correlation", "dev", {},
      "Score the comment from 0 to 5: the number of negative words in it.", [](Rng& r, int) {
        int n = r.range(0, 5);
        auto objects = some(r, L().objects, 5);
        std::vector<bool> neg(5, false);
        for (std::size_t i : r.distinct(static_cast<std::size_t>(n), 5)) neg[i] = true;
        std::vector<std::string> parts;
        for (std::size_t i = 0; i < 5; ++i) {
          std::string adj =
              neg[i] ? r.pick(L().negative) : r.pick(r.chance(1, 2) ? L().positive : L().adjectives);
          parts.push_back(a_or_an(adj) + " " + adj + " " + objects[i]);
        }
        return ex("comment: i saw " + join(parts, " , ") + " .", {std::to_string(n)});
      });
}

void add_classification(Adder& add) {
  add_sentiment_and_topic(add);
  add_detection_and_inference(add);
  add_acceptability_and_regression(add);
}

// ---- world knowledge ----------------------------------------------------------------------
// One question form per task, so a fact asked in a task's test set is never asked in the same
// task's training pool; other tasks ask about the same facts in other forms.

void add_knowledge(Adder& add) {
  auto person_q = [](std::string (*make)(const Person&, std::string*)) {
    return [make](Rng& r, int) {
      const Person& p = r.pick(W().people);
      std::string answer;
      std::string q = make(p, &answer);
      return ex(q, {answer});
    };
  };
  add("person_city", kKnowledge, "people", "EM", "train", {}, "Answer with the city where the person lives.",
      person_q([](const Person& p, std::string* a) {
        *a = W().cities[p.city].name;
        return "question: in which city does " + p.name + " live ?";
      }));
  add("person_job", kKnowledge, "people", "EM", "train", {}, "Answer with the person's job.",
      person_q([](const Person& p, std::string* a) {
        *a = p.job;
        return "question: what is the job of " + p.name + " ?";
      }));
  add("person_colour", kKnowledge, "people", "EM", "train", {}, "Answer with the person's favourite colour.",
      person_q([](const Person& p, std::string* a) {
        *a = p.colour;
        return "question: what is the favourite colour of " + p.name + " ?";
      }));
  add("person_pet", kKnowledge, "people", "EM", "train", {},
      "Answer with the animal the person keeps as a pet.", person_q([](const Person& p, std::string* a) {
        *a = p.pet;
        return "question: which animal does " + p.name + " keep as a pet ?";
      }));
  add("person_employer", kKnowledge, "people", "EM", "train", {},
      "Answer with the company the person works for.", person_q([](const Person& p, std::string* a) {
        *a = W().companies[p.employer].name;
        return "question: which company does " + p.name + " work for ?";
      }));
  add("job_cloze", kKnowledge, "people", "EM", "test", {}, "Fill in the blank with the person's profession.",
      person_q([](const Person& p, std::string* a) {
        *a = p.job;
        return "fill in the blank: the profession of " + p.name + " is ___ .";
      }));

  add(
      "city_country", kKnowledge, "places", "EM", "train", {}, "Answer with the country the city lies in.",
      [](Rng& r, int) {
        const City& c = r.pick(W().cities);
        return ex("question: which country is " + c.name + " in ?", {W().countries[c.country]});
      },
      Space::kSmall150);
  add(
      "city_river", kKnowledge, "places", "EM", "train", {},
      "Answer with the river that flows through the city.",
      [](Rng& r, int) {
        const City& c = r.pick(W().cities);
        return ex("question: which river flows through " + c.name + " ?", {c.river});
      },
      Space::kSmall150);

  add(
      "company_founder", kKnowledge, "companies", "EM", "train", {},
      "Answer with the founder of the company.",
      [](Rng& r, int) {
        const Company& c = r.pick(W().companies);
        return ex("question: who founded " + c.name + " ?", {W().people[c.founder].name});
      },
      Space::kSmall150);
  add(
      "company_hq", kKnowledge, "companies", "EM", "train", {},
      "Answer with the city where the company is based.",
      [](Rng& r, int) {
        const Company& c = r.pick(W().companies);
        return ex("question: where is " + c.name + " based ?", {W().cities[c.hq].name});
      },
      Space::kSmall150);
  add(
      "company_product", kKnowledge, "companies", "EM", "dev", {}, "Answer with what the company makes.",
      [](Rng& r, int) {
        const Company& c = r.pick(W().companies);
        return ex("question: what does " + c.name + " make ?", {c.product});
      },
      Space::kSmall150);

  add("person_country", kKnowledge, "multi-hop", "EM", "train", {},
      "Answer with the country the person lives in (the country of their city).",
      person_q([](const Person& p, std::string* a) {
        *a = W().countries[W().cities[p.city].country];
        return "question: in which country does " + p.name + " live ?";
      }));
  add(
      "founder_city", kKnowledge, "multi-hop", "EM", "dev", {},
      "Answer with the city where the founder of the company lives.",
      [](Rng& r, int) {
        const Company& c = r.pick(W().companies);
        return ex("question: in which city does the founder of " + c.name + " live ?",
                  {W().cities[W().people[c.founder].city].name});
      },
      Space::kSmall150);
  add("employer_hq_city", kKnowledge, "multi-hop", "EM", "test", {},
      "Answer with the city where the person's employer is based.",
      person_q([](const Person& p, std::string* a) {
        *a = W().cities[W().companies[p.employer].hq].name;
        return "question: in which city is the company that " + p.name + " works for based ?";
      }));

  add("claim_city_check", kKnowledge, "fact verification", "ACC", "train", {"true", "false"},
      "Is the claim about where the person lives true or false?", [](Rng& r, int label) {
        const Person& p = r.pick(W().people);
        std::size_t city = p.city;
        if (label == 1)
          while (city == p.city) city = static_cast<std::size_t>(r.below(W().cities.size()));
        return ex("claim: " + p.name + " lives in " + W().cities[city].name + " .",
                  {label == 0 ? "true" : "false"});
      });
  add("claim_job_check", kKnowledge, "fact verification", "Classification-F1", "test",
      {"supported", "refuted"}, "Is the statement about the person's job supported or refuted?",
      [](Rng& r, int label) {
        const Person& p = r.pick(W().people);
        std::string job = p.job;
        if (label == 1)
          while (job == p.job) job = r.pick(L().roles);
        return ex("statement: " + p.name + " works as " + a_or_an(job) + " " + job + " .",
                  {label == 0 ? "supported" : "refuted"});
      });
}

// ---- arithmetic ---------------------------------------------------------------------------

void add_arithmetic(Adder& add) {
  add("add_digits", kArithmetic, "addition", "EM", "train", {}, "Add the two numbers.", [](Rng& r, int) {
    int a = r.range(0, 99), b = r.range(0, 99);
    return ex("question: what is " + std::to_string(a) + " plus " + std::to_string(b) + " ?",
              {std::to_string(a + b)});
  });
  add("add_words", kArithmetic, "addition", "EM", "train", {},
      "Add the two numbers written in words; answer in words.", [](Rng& r, int) {
        int a = r.range(0, 99), b = r.range(0, 99);
        return ex("question: what is " + number_words(a) + " plus " + number_words(b) + " ?",
                  {number_words(a + b), std::to_string(a + b)});
      });
  add("sum_story", kArithmetic, "addition", "EM", "test", {}, "Solve the word problem; answer with a number.",
      [](Rng& r, int) {
        int a = r.range(1, 60), b = r.range(1, 40);
        std::string who = name_of(r), things = plural(r.pick(L().objects));
        return ex("problem: " + who + " has " + std::to_string(a) + " " + things + " and finds " +
                      std::to_string(b) + " more at the " + r.pick(L().places) + " . how many " + things +
                      " does " + who + " have in total ?",
                  {std::to_string(a + b)});
      });
  add("subtract_digits", kArithmetic, "subtraction", "EM", "train", {},
      "Subtract the second number from the first.", [](Rng& r, int) {
        int a = r.range(0, 199), b = r.range(0, a);
        return ex("question: what is " + std::to_string(a) + " minus " + std::to_string(b) + " ?",
                  {std::to_string(a - b)});
      });
  add("subtract_words", kArithmetic, "subtraction", "EM", "dev", {},
      "Take the second number away from the first; both are written in words.", [](Rng& r, int) {
        int a = r.range(0, 199), b = r.range(0, a);
        return ex("calculate: " + number_words(a) + " take away " + number_words(b),
                  {number_words(a - b), std::to_string(a - b)});
      });
  add("take_away_story", kArithmetic, "subtraction", "EM", "train", {},
      "Solve the word problem; answer with a number.", [](Rng& r, int) {
        int a = r.range(2, 99), b = r.range(1, a);
        auto who = names_of(r, 2);
        std::string things = plural(r.pick(L().objects));
        return ex("problem: " + who[0] + " had " + std::to_string(a) + " " + things + " and gave " +
                      std::to_string(b) + " to " + who[1] + " . how many " + things + " does " + who[0] +
                      " have now ?",
                  {std::to_string(a - b)});
      });
  add("larger_number", kArithmetic, "comparison", "EM", "train", {},
      "Answer with the larger of the two numbers.", [](Rng& r, int) {
        int a = r.range(0, 999), b = a;
        while (b == a) b = r.range(0, 999);
        return ex("question: which is larger , " + std::to_string(a) + " or " + std::to_string(b) + " ?",
                  {std::to_string(std::max(a, b))});
      });
  add("greater_than", kArithmetic, "comparison", "ACC", "train", {"yes", "no"},
      "Is the first number greater than the second? Answer yes or no.", [](Rng& r, int label) {
        int a = r.range(0, 999), b = r.range(0, 999);
        if ((label == 0) != (a > b)) {
          if (a == b)
            a = label == 0 ? a + 1 : a;
          else
            std::swap(a, b);
        }
        return ex("question: is " + std::to_string(a) + " greater than " + std::to_string(b) + " ?",
                  {label == 0 ? "yes" : "no"});
      });
  add("smaller_word_number", kArithmetic, "comparison", "EM", "test", {},
      "Answer with the smaller of the two numbers written in words.", [](Rng& r, int) {
        int a = r.range(0, 99), b = a;
        while (b == a) b = r.range(0, 99);
        int m = std::min(a, b);
        return ex("question: which number is smaller , " + number_words(a) + " or " + number_words(b) + " ?",
                  {number_words(m), std::to_string(m)});
      });
  add("count_words", kArithmetic, "counting", "EM", "train", {}, "Count the words after the colon.",
      [](Rng& r, int) {
        std::vector<std::string> words;
        int n = r.range(2, 12);
        for (int i = 0; i < n; ++i) words.push_back(content_word(r));
        return ex("count the words : " + join(words), {std::to_string(n)});
      });
  auto count_task = [](bool animals) {
    return [animals](Rng& r, int) {
      int n = r.range(2, 6), hits = 0;
      std::vector<std::string> items;
      for (int i = 0; i < n; ++i) {
        bool hit = r.chance(1, 2);
        hits += hit ? 1 : 0;
        if (animals) {
          std::string x = hit ? r.pick(L().animals) : r.pick(L().objects);
          items.push_back(a_or_an(x) + " " + x);
        } else {
          items.push_back(
              cat({"the ", (hit ? r.pick(L().colours) : r.pick(L().adjectives)), " ", r.pick(L().objects)}));
        }
      }
      std::string list =
          join(std::vector<std::string>(items.begin(), items.end() - 1), " , ") + " and " + items.back();
      return animals ? ex("how many animals are mentioned ? text: " + name_of(r) + " saw " + list + " .",
                          {std::to_string(hits)})
                     : ex("how many colours are named ? text: " + name_of(r) + " saw " + list + " .",
                          {std::to_string(hits)});
    };
  };
  add("count_animals", kArithmetic, "counting", "EM", "train", {}, "Count the animals mentioned in the text.",
      count_task(true));
  add("count_colours", kArithmetic, "counting", "EM", "dev", {},
      "Count how many colour words the text contains.", count_task(false));
  add("parity", kArithmetic, "parity", "ACC", "train", {"even", "odd"}, "Is the number even or odd?",
      [](Rng& r, int label) {
        int n = r.range(0, 4999) * 2 + (label == 0 ? 0 : 1);
        return ex("question: is " + std::to_string(n) + " even or odd ?", {label == 0 ? "even" : "odd"});
      });
}

// ---- string transformation ----------------------------------------------------------------

void add_string(Adder& add) {
  add("reverse_words", kString, "reordering", "Rouge-L", "train", {}, "Write the words in reverse order.",
      [](Rng& r, int) {
        std::vector<std::string> w;
        int n = r.range(3, 8);
        for (int i = 0; i < n; ++i) w.push_back(content_word(r));
        std::vector<std::string> rev(w.rbegin(), w.rend());
        return ex("reverse the words : " + join(w), {join(rev)});
      });
  add("sort_words", kString, "reordering", "Rouge-L", "train", {}, "Sort the words alphabetically.",
      [](Rng& r, int) {
        auto w = distinct_content_words(r, static_cast<std::size_t>(r.range(3, 7)));
        auto sorted = w;
        std::sort(sorted.begin(), sorted.end());
        return ex("sort the words alphabetically : " + join(w), {join(sorted)});
      });
  add("swap_first_last", kString, "reordering", "EM", "train", {}, "Swap the first and the last word.",
      [](Rng& r, int) {
        auto w = distinct_content_words(r, static_cast<std::size_t>(r.range(3, 8)));
        auto s = w;
        std::swap(s.front(), s.back());
        return ex("swap the first and last word : " + join(w), {join(s)});
      });
  add("reverse_list", kString, "reordering", "Rouge-L", "test", {},
      "Write the items of the list in reverse order.", [](Rng& r, int) {
        auto w = distinct_content_words(r, static_cast<std::size_t>(r.range(3, 7)));
        std::vector<std::string> rev(w.rbegin(), w.rend());
        return ex("list: " + join(w, " ; "), {join(rev, " ; ")});
      });

  // Number agreement: "the old lamp is heavy" <-> "the old lamps are heavy".
  auto number_pair = [](Rng& r, std::string* singular, std::string* plural_form) {
    std::string adj = r.chance(1, 2) ? r.pick(L().adjectives) + " " : std::string();
    std::string o = r.pick(L().objects);
    if (r.chance(1, 2)) {
      *singular = "the " + adj + o;
      *plural_form = "the " + adj + plural(o);
    } else {
      std::string pred = r.chance(1, 2) ? r.pick(L().adjectives) : "in the " + r.pick(L().places);
      *singular = "the " + adj + o + " is " + pred;
      *plural_form = "the " + adj + plural(o) + " are " + pred;
    }
  };
  add("pluralise", kString, "morphology", "EM", "train", {},
      "Rewrite the phrase with the noun in the plural.", [number_pair](Rng& r, int) {
        std::string s, p;
        number_pair(r, &s, &p);
        return ex("make plural : " + s, {p});
      });
  add("singularise", kString, "morphology", "EM", "test", {},
      "Rewrite the phrase with the noun in the singular.", [number_pair](Rng& r, int) {
        std::string s, p;
        number_pair(r, &s, &p);
        return ex("make singular : " + p, {s});
      });
  add("past_tense", kString, "morphology", "EM", "train", {}, "Rewrite the sentence in the past tense.",
      [](Rng& r, int) {
        Event e = make_event(r, -1, -1, 0);
        return ex("change to past tense : " + e.clause_present() + " .", {e.clause() + " ."});
      });
  add("present_tense", kString, "morphology", "EM", "dev", {}, "Rewrite the sentence in the present tense.",
      [](Rng& r, int) {
        Event e = make_event(r, -1, -1, 0);
        return ex("change to present tense : " + e.clause() + " .", {e.clause_present() + " ."});
      });

  add("remove_adjectives", kString, "editing", "Rouge-L", "train", {},
      "Remove every adjective from the sentence.", [](Rng& r, int) {
        auto adjective = [&r]() {
          switch (r.below(4)) {
            case 0:
              return r.pick(L().adjectives);
            case 1:
              return r.pick(L().colours);
            case 2:
              return r.pick(L().positive);
            default:
              return r.pick(L().negative);
          }
        };
        auto objects = some(r, L().objects, 2);
        std::string who = name_of(r), verb = r.pick(L().verbs).past, place = r.pick(L().places);
        std::string a1 = adjective(), a2 = adjective(), a3 = adjective();
        bool two = r.chance(1, 2);
        std::string in = who + " " + verb + " the " + a1 + " " + objects[0];
        std::string out = who + " " + verb + " the " + objects[0];
        if (two) {
          in += " and the " + a2 + " " + objects[1];
          out += " and the " + objects[1];
        }
        in += " at the " + a3 + " " + place + " .";
        out += " at the " + place + " .";
        return ex("remove the adjectives : " + in, {out});
      });
  add("dedupe_words", kString, "editing", "Rouge-L", "train", {},
      "Remove repeated words, keeping each first occurrence.", [](Rng& r, int) {
        auto uniq = distinct_content_words(r, static_cast<std::size_t>(r.range(3, 6)));
        std::vector<std::string> seq = uniq;
        int extra = r.range(1, 4);
        for (int i = 0; i < extra; ++i) {
          std::size_t src = static_cast<std::size_t>(r.below(uniq.size()));
          // Insert the repeat somewhere after the word's first occurrence.
          std::size_t first =
              static_cast<std::size_t>(std::find(seq.begin(), seq.end(), uniq[src]) - seq.begin());
          std::size_t pos = first + 1 + static_cast<std::size_t>(r.below(seq.size() - first));
          seq.insert(seq.begin() + static_cast<std::ptrdiff_t>(pos), uniq[src]);
        }
        return ex("remove repeated words : " + join(seq), {join(uniq)});
      });
  add("delete_word", kString, "editing", "Rouge-L", "dev", {}, "Delete every occurrence of the given word.",
      [](Rng& r, int) {
        Event e = make_event(r);
        auto tok = split_words(e.clause());
        std::string target = tok[static_cast<std::size_t>(r.below(tok.size()))];
        std::vector<std::string> kept;
        for (const auto& t : tok)
          if (t != target) kept.push_back(t);
        return ex("delete the word " + target + " : " + join(tok) + " .", {join(kept) + " ."});
      });
  add("replace_word", kString, "editing", "EM", "train", {},
      "Replace the first word with the second one everywhere.", [](Rng& r, int) {
        Event e = make_event(r);
        std::string to = e.object;
        while (to == e.object) to = r.pick(L().objects);
        Event out = e;
        out.object = to;
        return ex("replace " + e.object + " with " + to + " : " + e.clause() + " .", {out.clause() + " ."});
      });
}

// ---- generation ---------------------------------------------------------------------------

void add_generation(Adder& add) {
  add("bio_to_text", kGeneration, "data to text", "Rouge-L", "train", {},
      "Write a sentence from the fields of the record.", [](Rng& r, int) {
        const Person& p = r.pick(W().people);
        const std::string city = W().cities[p.city].name;
        std::string in = "name: " + p.name + " | job: " + p.job + " | city: " + city;
        std::string out = p.name + " is " + a_or_an(p.job) + " " + p.job + " who lives in " + city;
        if (r.chance(1, 2)) {
          in += " | pet: " + p.pet;
          out += " and keeps " + a_or_an(p.pet) + " " + p.pet;
        }
        out += " .";
        if (r.chance(1, 2)) {
          in += " | colour: " + p.colour;
          out += " the favourite colour of " + p.name + " is " + p.colour + " .";
        }
        return ex(in, {out});
      });
  add("company_to_text", kGeneration, "data to text", "Rouge-L", "test", {},
      "Describe the company in one sentence.", [](Rng& r, int) {
        const Company& c = r.pick(W().companies);
        const std::string founder = W().people[c.founder].name, city = W().cities[c.hq].name;
        if (r.chance(1, 2))
          return ex("company: " + c.name + " | founder: " + founder + " | city: " + city +
                        " | product: " + c.product,
                    {c.name + " was founded by " + founder + " , is based in " + city + " and makes " +
                     c.product + " ."});
        return ex("company: " + c.name + " | city: " + city + " | product: " + c.product,
                  {c.name + " is based in " + city + " and makes " + c.product + " ."});
      });

  add("fuse_sentences", kGeneration, "sentence fusion", "Rouge-L", "train", {},
      "Join the two sentences into one.", [](Rng& r, int) {
        Event a = make_event(r), b = make_event(r);
        b.who = a.who;
        return ex("sentence1: " + a.clause() + " . sentence2: " + b.clause() + " .",
                  {a.clause() + " and " + b.verb.past + " " + b.with_tail(b.np()) + " ."});
      });
  add("split_sentence", kGeneration, "sentence fusion", "Rouge-L", "test", {},
      "Split the long sentence into two sentences.", [](Rng& r, int) {
        Event a = make_event(r), b = make_event(r);
        if (r.chance(1, 2)) {
          b.who = a.who;
          return ex("sentence: " + a.clause() + " and " + b.verb.past + " " + b.with_tail(b.np()) + " .",
                    {a.clause() + " . " + b.clause() + " ."});
        }
        return ex("sentence: " + a.clause() + " and " + b.clause() + " .",
                  {a.clause() + " . " + b.clause() + " ."});
      });

  add("story_summary", kGeneration, "summarization", "Rouge-L", "train", {},
      "Summarize the story in one sentence.", [](Rng& r, int) {
        Event e = make_event(r, -1, 1, 1);
        std::vector<std::string> s = {e.who + " woke up " + e.time + " .",
                                      e.who + " went to the " + e.place + " ."};
        if (r.chance(1, 2)) s.push_back("the weather was " + r.pick(L().adjectives) + " .");
        s.push_back("there , " + e.who + " " + e.verb.past + " " + e.np() + " .");
        if (r.chance(1, 2)) s.push_back(r.pick(W().people).name + " was not there .");
        s.push_back("then " + e.who + " went home .");
        return ex("story: " + join(s), {e.clause() + " ."});
      });

  add("question_generation", kGeneration, "question generation", "Rouge-L", "train", {},
      "Write the question whose answer is the given phrase.", [](Rng& r, int) {
        Event e = make_event(r, -1, 1, 0);
        std::string context = e.clause() + " .";
        switch (r.below(3)) {
          case 0:
            return ex("answer: " + e.who + " context: " + context,
                      {"who " + e.verb.past + " " + e.np() + " " + e.at_place() + " ?"});
          case 1:
            return ex("answer: " + e.np() + " context: " + context,
                      {"what did " + e.who + " " + e.verb.base + " " + e.at_place() + " ?"});
          default:
            return ex("answer: the " + e.place + " context: " + context,
                      {"where did " + e.who + " " + e.verb.base + " " + e.np() + " ?"});
        }
      });
}

// Task names end up in file names that other code parses: `{task}_{k}_{seed}_{split}.tsv`.
void check_name(const std::string& name) {
  auto fail = [&](const std::string& why) { throw std::logic_error("gym task name '" + name + "': " + why); };
  if (name.empty()) fail("empty");
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
      fail("character outside [a-z0-9_-]");
  if (name.find("_full_") != std::string::npos ||
      (name.size() >= 5 && name.compare(name.size() - 5, 5, "_full") == 0))
    fail("contains _full");
  // No trailing "_<digits>_<digits>" (and no trailing "_<digits>" either, to be safe).
  auto last = name.rfind('_');
  if (last != std::string::npos && last + 1 < name.size() &&
      std::all_of(name.begin() + static_cast<std::ptrdiff_t>(last) + 1, name.end(),
                  [](char c) { return c >= '0' && c <= '9'; }))
    fail("ends in _<digits>");
}

}  // namespace

std::vector<TaskDef> task_defs() {
  std::vector<TaskDef> defs;
  Adder add{defs};
  add_extractive(add);
  add_classification(add);
  add_knowledge(add);
  add_arithmetic(add);
  add_string(add);
  add_generation(add);
  std::set<std::string> names;
  for (const auto& d : defs) {
    check_name(d.name);
    if (!names.insert(d.name).second) throw std::logic_error("gym task '" + d.name + "' defined twice");
  }
  return defs;
}

}  // namespace tlmoe::gym::detail
