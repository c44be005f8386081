// Test tool for test_chat_template_jinja.py: reads JSON requests, one a line, on stdin and
// writes one JSON answer a line on stdout, so that Python can compare jetserve's chat prompts
// with jinja2's rendering of the same template.
//
// Requests:
//   {"write_default_tokenizer": dir}  writes the embedded model's tokenizer files into dir.
//   {"tokenizer_dir": dir, "template_file": path | "checkpoint_dir": dir,
//    "messages": [{"role": r, "content": c}, ...], "add_generation_prompt": bool}
// Answers: {"text": Render(), "ids": Apply(), "ids_of_text": Encode(text, allow_special=true),
//   "describe", "is_fallback", "default_system_prompt"}, or {"error": status}.
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace jetserve {
namespace {

using nlohmann::json;

json Error(const absl::Status& status) { return json{{"error", status.ToString()}}; }

absl::StatusOr<const Tokenizer*> TokenizerFor(const std::string& dir) {
  // Loading Qwen's tokenizer takes a while; each directory is loaded once.
  static auto* cache = new std::map<std::string, std::unique_ptr<Tokenizer>>();
  auto it = cache->find(dir);
  if (it == cache->end()) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::LoadFromDir(dir);
    if (!tok.ok()) return tok.status();
    it = cache->emplace(dir, *std::move(tok)).first;
  }
  return it->second.get();
}

json Handle(const json& request) {
  if (request.contains("write_default_tokenizer")) {
    absl::Status st =
        WriteByteLevelTokenizer(request["write_default_tokenizer"].get<std::string>());
    return st.ok() ? json{{"ok", true}} : Error(st);
  }
  absl::StatusOr<const Tokenizer*> tok =
      TokenizerFor(request.at("tokenizer_dir").get<std::string>());
  if (!tok.ok()) return Error(tok.status());
  absl::StatusOr<ChatTemplate> t = absl::InvalidArgumentError("no template_file or checkpoint_dir");
  if (request.contains("template_file")) {
    const std::string path = request["template_file"].get<std::string>();
    std::ifstream in(path, std::ios::binary);
    if (!in) return Error(absl::NotFoundError("cannot open " + path));
    std::stringstream buf;
    buf << in.rdbuf();
    t = ChatTemplate::FromTemplateText(buf.str(), path, **tok);
  } else if (request.contains("checkpoint_dir")) {
    t = ChatTemplate::FromCheckpointDir(request["checkpoint_dir"].get<std::string>(), **tok);
  }
  if (!t.ok()) return Error(t.status());

  std::vector<ChatMessage> messages;
  for (const json& m : request.at("messages")) {
    messages.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
  }
  const bool gen = request.at("add_generation_prompt").get<bool>();
  absl::StatusOr<std::string> text = t->Render(messages, gen);
  if (!text.ok()) return Error(text.status());
  absl::StatusOr<std::vector<int32_t>> ids = t->Apply(messages, gen);
  if (!ids.ok()) return Error(ids.status());
  absl::StatusOr<std::vector<int32_t>> ids_of_text = (*tok)->Encode(*text, /*allow_special=*/true);
  if (!ids_of_text.ok()) return Error(ids_of_text.status());
  return json{{"text", *text},
              {"ids", *ids},
              {"ids_of_text", *ids_of_text},
              {"describe", t->Describe()},
              {"is_fallback", t->is_fallback()},
              {"default_system_prompt", t->default_system_prompt()}};
}

}  // namespace
}  // namespace jetserve

int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    const nlohmann::json request = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    nlohmann::json answer;
    try {
      answer = request.is_discarded() ? nlohmann::json{{"error", "request is not JSON"}}
                                      : jetserve::Handle(request);
    } catch (const nlohmann::json::exception& e) {  // a malformed request: say so, go on
      answer = nlohmann::json{{"error", std::string("bad request: ") + e.what()}};
    }
    std::cout << answer.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  return 0;
}
