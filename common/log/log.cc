#include "absl/strings/string_view.h"
#include "common/log/log.h"

#include <string>

#include "spdlog/sinks/stdout_color_sinks.h"

namespace kvs {

bool ConfigureLogging(absl::string_view level) {
  const spdlog::level::level_enum lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") return false;
  auto logger = spdlog::stderr_color_mt("kvs");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ [%t] %v");
  logger->set_level(lvl);
  spdlog::set_default_logger(logger);
  return true;
}

}  // namespace kvs
