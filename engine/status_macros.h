// absl::Status plumbing: early return on error, and unwrap-or-return for StatusOr.
#ifndef JETSERVE_ENGINE_STATUS_MACROS_H_
#define JETSERVE_ENGINE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define JETSERVE_CONCAT_INNER_(a, b) a##b
#define JETSERVE_CONCAT_(a, b) JETSERVE_CONCAT_INNER_(a, b)

// RETURN_IF_ERROR(expr): evaluates an absl::Status expression, returns it if not OK.
#define RETURN_IF_ERROR(expr)                            \
  do {                                                   \
    ::absl::Status _jetserve_status = (expr);            \
    if (!_jetserve_status.ok()) return _jetserve_status; \
  } while (0)

// ASSIGN_OR_RETURN(lhs, expr): lhs = *expr when expr (a StatusOr) is OK, else returns its status.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(JETSERVE_CONCAT_(_jetserve_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

#endif  // JETSERVE_ENGINE_STATUS_MACROS_H_
