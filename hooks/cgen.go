package hooks

import (
	"bytes"
	"fmt"
	"strings"
	"text/template"
)

// cRow is one row of the table as the C templates see it.
type cRow struct {
	*Hook
	ID                        int
	Decl, Args                string
	SizeExpr, EpExpr, ReqExpr string
	// Flag bytes of the generated per-hook tables.
	Faultable, Polls, Defers, CompletionOnly int
	// Unresolved is what the wrapper returns when no libucp defines the
	// function; Fail(code) renders a failure in the return convention.
	Unresolved, FailPrefix, FailSuffix string
	IsStatusPtr, IsStatus, IsVoid      bool
	CallbackConst                      string
	// ProtoGuard, when OwnProto, is the preprocessor condition under which
	// the generated C declares the function itself (empty: always).
	OwnProto   bool
	ProtoGuard string
	// Fast rows try ucxf_fast_decide before ucxf_slow_*: faultable rows
	// whose failure is only a returned code (no forced close). A status
	// query takes it only while no request carries a failure.
	Fast bool
	// FastRec rows also have a recording fast half (ucxf_rec_*): a call
	// that passes is logged without ucxf_enter and ucxf_leave. Not a
	// status query (its completion delivery needs ucxf_leave), nor a row
	// with an examined request or an After hook.
	FastRec bool
	// FastTrack rows have a fast half for deferred mode (ucxf_trk_*): a
	// polled operation (no callback) that passes is counted by
	// ucxf_fast_track, and its request, if libucp returns one, followed
	// for kill-ep, without ucxf_enter and ucxf_leave.
	FastTrack bool
	// FastRules rows have a rules half (ucxf_rul_*): a call of a trusted
	// caller that a rule may match is decided by ucxf_rules_pass, and
	// passes without ucxf_enter and ucxf_leave when no rule acts. Not a
	// status query, which libucp answers before the decision.
	FastRules bool
}

// GenerateC renders the injector's generated C files from Table: a header
// with the hook numbers and a source file with one wrapper per row. The map
// is keyed by file name.
func GenerateC() (map[string][]byte, error) {
	if len(Table) > MaxHooks {
		return nil, fmt.Errorf("hook table has %d rows, at most %d fit the C state", len(Table), MaxHooks)
	}
	rows := make([]cRow, len(Table))
	for i := range Table {
		h := &Table[i]
		var decl, args []string
		for _, p := range h.Params {
			sep := " "
			if strings.HasSuffix(p.Type, "*") {
				sep = ""
			}
			decl = append(decl, p.Type+sep+p.Name)
			args = append(args, p.Name)
		}
		r := cRow{Hook: h, ID: i, Decl: strings.Join(decl, ", "), Args: strings.Join(args, ", "),
			SizeExpr: "0", EpExpr: "NULL", ReqExpr: "NULL",
			IsStatusPtr: h.Return == StatusPtr, IsStatus: h.Return == Status, IsVoid: h.Return == Void}
		switch h.Return {
		case StatusPtr:
			r.Unresolved, r.FailPrefix, r.FailSuffix = "UCS_STATUS_PTR(UCS_ERR_UNSUPPORTED)", "UCS_STATUS_PTR(", ")"
		case Status:
			r.Unresolved, r.FailPrefix, r.FailSuffix = "UCS_ERR_UNSUPPORTED", "(ucs_status_t)(", ")"
		case Void:
			r.Unresolved = ""
		case Unsigned:
			r.Unresolved = "0"
		}
		if (h.Faultable || h.Polls) && h.Return != StatusPtr && h.Return != Status {
			return nil, fmt.Errorf("hook %s: only functions returning a status can fail", h.Name)
		}
		if maj, min := h.SinceVersion(); h.Header != "" {
			r.OwnProto = true
		} else if maj > 1 || min > 13 {
			r.OwnProto = true
			r.ProtoGuard = fmt.Sprintf("UCP_API_VERSION < UCP_VERSION(%d, %d)", maj, min)
		}
		if h.Faultable && h.Refusal == "" {
			r.Faultable = 1
		}
		if h.Polls {
			if h.Return != Status || h.Request == "" {
				return nil, fmt.Errorf("hook %s: a status query returns ucs_status_t and names its request", h.Name)
			}
			if !h.OptIn {
				// UCX never fails a poll by itself: drawn by default, a
				// poll would decide by timing which operation fails.
				return nil, fmt.Errorf("hook %s: a status query delivers its operation's outcome and must be OptIn", h.Name)
			}
			r.Polls = 1
		}
		r.Fast = r.Faultable == 1 && !h.ForceClose
		if h.Callback != "" {
			if h.Param == "" || h.ArgIndex(h.Param) == 0 {
				return nil, fmt.Errorf("hook %s: a callback needs its ucp_request_param_t parameter", h.Name)
			}
			switch h.Callback {
			case "send", "recv", "recv_stream", "recv_am":
			default:
				return nil, fmt.Errorf("hook %s: unknown callback kind %q", h.Name, h.Callback)
			}
			r.Defers = 1
			r.CallbackConst = "UCXF_CB_" + strings.ToUpper(h.Callback)
		}
		if h.CompletionOnly {
			if h.Callback == "" {
				return nil, fmt.Errorf("hook %s: fails only on completion but has no callback", h.Name)
			}
			r.CompletionOnly = 1
		}
		if h.ForceClose && (h.Endpoint == "" || h.Param == "") {
			return nil, fmt.Errorf("hook %s: a forced close needs the endpoint and the param", h.Name)
		}
		for _, ref := range []struct {
			name string
			dst  *string
			conv string
		}{{h.Size, &r.SizeExpr, "(uint64_t)"}, {h.Endpoint, &r.EpExpr, "(void *)"}, {h.Request, &r.ReqExpr, "(void *)"}} {
			if ref.name == "" {
				continue
			}
			if h.ArgIndex(ref.name) == 0 {
				return nil, fmt.Errorf("hook %s: %q is not a parameter", h.Name, ref.name)
			}
			*ref.dst = ref.conv + ref.name
		}
		// After the endpoint, size and request expressions above.
		r.FastTrack = r.Fast && r.Defers == 1 && r.IsStatusPtr && h.After == "" && r.ReqExpr == "NULL"
		r.FastRec = r.Fast && r.Polls == 0 && r.ReqExpr == "NULL" && h.After == "" && (r.IsStatusPtr || r.IsStatus)
		r.FastRules = r.Fast && r.Polls == 0
		rows[i] = r
	}
	out := map[string][]byte{}
	for name, tmpl := range map[string]string{
		"hooks_gen.h": headerTemplate, "hooks_gen.c": sourceTemplate, "hooks_table.c": tableTemplate,
	} {
		t, err := template.New(name).Parse(tmpl)
		if err != nil {
			return nil, fmt.Errorf("parsing template %s: %w", name, err)
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, rows); err != nil {
			return nil, fmt.Errorf("rendering %s: %w", name, err)
		}
		out[name] = buf.Bytes()
	}
	return out, nil
}

// tableTemplate holds the row tables apart from the wrappers: every file of
// the injector reads them, and the wrappers call into every file, so in one
// file they would make each file depend on a file that depends on it
// (scripts/check-preload-deps.sh).
const tableTemplate = `/* Code generated by hooks/gen from hooks/table.go. DO NOT EDIT. */
#include "hooks_gen.h"

const char *const ucxf_hook_names[UCXF_NUM_HOOKS] = {
{{- range .}}
    "{{.Name}}",
{{- end}}
};

const unsigned char ucxf_hook_faultable[UCXF_NUM_HOOKS] = {
{{- range .}}
    {{.Faultable}}, /* {{.Name}} */
{{- end}}
};

const unsigned char ucxf_hook_polls[UCXF_NUM_HOOKS] = {
{{- range .}}
    {{.Polls}}, /* {{.Name}} */
{{- end}}
};

const unsigned char ucxf_hook_defers[UCXF_NUM_HOOKS] = {
{{- range .}}
    {{.Defers}}, /* {{.Name}} */
{{- end}}
};

const unsigned char ucxf_hook_completion_only[UCXF_NUM_HOOKS] = {
{{- range .}}
    {{.CompletionOnly}}, /* {{.Name}} */
{{- end}}
};
`

const headerTemplate = `/* Code generated by hooks/gen from hooks/table.go. DO NOT EDIT. */
#ifndef UCXFAULT_HOOKS_GEN_H
#define UCXFAULT_HOOKS_GEN_H

#define UCXF_NUM_HOOKS {{len .}}

enum ucxf_hook_id {
{{- range .}}
    {{.CName}} = {{.ID}},
{{- end}}
};

/* Symbol names, indexed by hook id. */
extern const char *const ucxf_hook_names[UCXF_NUM_HOOKS];
/* 1 where the row allows faults, indexed by hook id. */
extern const unsigned char ucxf_hook_faultable[UCXF_NUM_HOOKS];
/* 1 where the row is a status query on a request, indexed by hook id. */
extern const unsigned char ucxf_hook_polls[UCXF_NUM_HOOKS];
/* 1 where a failure can be delivered on completion through the
 * ucp_request_param_t callback, indexed by hook id. */
extern const unsigned char ucxf_hook_defers[UCXF_NUM_HOOKS];
/* 1 where the row may only fail on completion, indexed by hook id. */
extern const unsigned char ucxf_hook_completion_only[UCXF_NUM_HOOKS];

#endif
`

const sourceTemplate = `/* Code generated by hooks/gen from hooks/table.go. DO NOT EDIT. */
#include "ucxfault.h"
#include "defer.h"
#include "record_fast.h"
#include "rules_fast.h"
{{define "plaincall"}}
    {{- if .After}}
        {{.Return}} ret = real({{.Args}});
        if (ret == UCS_OK) {
            {{.After}}({{.Args}});
        }
        return ret;
    {{- else if .IsVoid}}
        real({{.Args}});
        return;
    {{- else}}
        return real({{.Args}});
    {{- end}}
{{- end}}
{{- range .}}
{{- if .OwnProto}}

/* {{.Name}} (UCX {{.Since}}+) is declared {{if .Header}}in {{.Header}}, which the
 * injector does not include{{else}}only by newer headers than these{{end}}: declared here from
 * the hook table. */
{{- if .ProtoGuard}}
#if {{.ProtoGuard}}
{{- end}}
{{.Return}} {{.Name}}({{.Decl}});
{{- if .ProtoGuard}}
#endif
{{- end}}
{{- end}}
static __attribute__((noinline)) {{.Return}} ucxf_slow_{{.Name}}({{.Decl}});
{{- if .Fast}}
static __attribute__((noinline, optimize("omit-frame-pointer"))) {{.Return}} ucxf_fast_{{.Name}}({{.Decl}});
{{- end}}
{{- if .FastRec}}
static __attribute__((noinline)) {{.Return}} ucxf_rec_{{.Name}}({{.Decl}});
{{- end}}
{{- if .FastTrack}}
static __attribute__((noinline)) {{.Return}} ucxf_trk_{{.Name}}({{.Decl}});
{{- end}}
{{- if .FastRules}}
static __attribute__((noinline)) {{.Return}} ucxf_rul_{{.Name}}({{.Decl}});
{{- end}}

/* {{.Name}}: {{.Summary}}.
 * The wrapper passes the call on when {{if eq .Return.String "unsigned"}}progress has no work for the
 * injector{{else}}its hook is not armed{{end}}, else jumps to {{if .Fast}}ucxf_fast_{{.Name}}{{else}}ucxf_slow_{{.Name}}{{end}}: two
 * loads, two branches and a tail call. Every jump is a tail call, so the
 * next half sees the application's return address as its own. */
{{.Return}} {{.Name}}({{.Decl}})
{
    __typeof__({{.Name}}) *real = (__typeof__({{.Name}}) *)
        __atomic_load_n(&ucxf_real[{{.CName}}], __ATOMIC_ACQUIRE);
    {{- if eq .Return.String "unsigned"}}
    /* Never faulted, counted or recorded: it runs millions of times a
     * second, and only its hook matters, when there is work for it
     * (callbacks to deliver, a kill, two libucp copies to route between). */
    if (UCXF_LIKELY(real != NULL) && UCXF_LIKELY(!__atomic_load_n(&ucxf_progress_work, __ATOMIC_ACQUIRE))) {
        return real({{.Args}});
    }
    {{- if .Before}}
    {{.Before}}({{.Args}});
    {{- end}}
    {{- else}}
    {{- if .Rewrite}}

    {{.RewriteArg}} = {{.Rewrite}}({{.RewriteArg}});
    {{- end}}
    {{- if .Before}}

    {{.Before}}({{.Args}});
    {{- end}}
    if (UCXF_LIKELY(real != NULL) && UCXF_LIKELY(!ucxf_armed[{{.CName}}]){{if .Polls}} && UCXF_LIKELY(!ucxf_defer_active()){{end}}) {
        {{- template "plaincall" .}}
    }
    {{- if .Fast}}
    if (UCXF_LIKELY(real != NULL)) {
        return ucxf_fast_{{.Name}}({{.Args}});
    }
    {{- end}}
    {{- end}}
    {{- if .IsVoid}}
    ucxf_slow_{{.Name}}({{.Args}});
    {{- else}}
    return ucxf_slow_{{.Name}}({{.Args}});
    {{- end}}
}
{{- if .Fast}}

/* The armed common case (ucxf_fast_decide), apart from the wrapper so that
 * its registers cost nothing when the hook is not armed. The wrapper has
 * resolved the real function. */
static {{.Return}} ucxf_fast_{{.Name}}({{.Decl}})
{
    {{- if .FastRules}}
    int fast = ucxf_fast_decide({{.CName}}, __builtin_return_address(0), {{.SizeExpr}}, {{.EpExpr}});

    if (UCXF_LIKELY(fast == 0)) {
    {{- else}}
    if ({{if .Polls}}UCXF_LIKELY(!ucxf_defer_active()) && {{end}}UCXF_LIKELY(ucxf_fast_decide({{.CName}}, __builtin_return_address(0), {{.SizeExpr}}, {{.EpExpr}}) == 0)) {
    {{- end}}
        /* Loaded after the decision, which then has one more register. */
        __typeof__({{.Name}}) *real = (__typeof__({{.Name}}) *)
            __atomic_load_n(&ucxf_real[{{.CName}}], __ATOMIC_ACQUIRE);
        {{- template "plaincall" .}}
    }
    {{- if .FastRules}}
    if (fast == 2) {
        {{if not .IsVoid}}return {{end}}ucxf_rul_{{.Name}}({{.Args}});
        {{- if .IsVoid}}
        return;
        {{- end}}
    }
    {{- end}}
    {{- if .FastRec}}
    if (UCXF_LIKELY(ucxf_fast_record({{.CName}}, __builtin_return_address(0), {{.SizeExpr}}, {{.EpExpr}}) == 0)) {
        return ucxf_rec_{{.Name}}({{.Args}});
    }
    {{- end}}
    {{- if .FastTrack}}
    if (!({{.Param}}->op_attr_mask & UCP_OP_ATTR_FIELD_CALLBACK) &&
        UCXF_LIKELY(ucxf_fast_track({{.CName}}, __builtin_return_address(0), {{.SizeExpr}}, {{.EpExpr}}) == 0)) {
        return ucxf_trk_{{.Name}}({{.Args}});
    }
    {{- end}}
    return ucxf_slow_{{.Name}}({{.Args}});
}
{{- end}}
{{- if .FastTrack}}

/* Deferred mode, a polled operation that passes (ucxf_fast_track has
 * counted it): the real call, then its request, if any, is followed for
 * kill-ep as ucxf_leave follows it. A callback needs its trampoline set
 * before the call: the slow half. Reached by a tail call. */
static {{.Return}} ucxf_trk_{{.Name}}({{.Decl}})
{
    __typeof__({{.Name}}) *real = (__typeof__({{.Name}}) *)
        __atomic_load_n(&ucxf_real[{{.CName}}], __ATOMIC_ACQUIRE);
    ucs_status_ptr_t ret = real({{.Args}});

    if (UCXF_UNLIKELY(UCS_PTR_IS_PTR(ret))) {
        ucxf_track_pass({{.CName}}, {{.EpExpr}}, {{.SizeExpr}}, ret);
    }
    return ret;
}
{{- end}}
{{- if .FastRules}}

/* A call that a rule may match, or that may fail (ucxf_fast_decide
 * answered 2): the rules half decides it (ucxf_rules_pass, which counts a
 * call it passes); a call it cannot pass takes the slow half. Reached by
 * a tail call, as the slow half. */
static {{.Return}} ucxf_rul_{{.Name}}({{.Decl}})
{
    if (UCXF_LIKELY(ucxf_rules_pass({{.CName}}, {{.SizeExpr}}, {{.EpExpr}}) == 0)) {
        __typeof__({{.Name}}) *real = (__typeof__({{.Name}}) *)
            __atomic_load_n(&ucxf_real[{{.CName}}], __ATOMIC_ACQUIRE);
        {{- template "plaincall" .}}
    }
    {{- if .IsVoid}}
    ucxf_slow_{{.Name}}({{.Args}});
    {{- else}}
    return ucxf_slow_{{.Name}}({{.Args}});
    {{- end}}
}
{{- end}}
{{- if .FastRec}}

/* Recording, a call that passes (ucxf_fast_record has counted it): the
 * real call between one read of the log's clock and the append. Reached by
 * a tail call, as the slow half. */
static {{.Return}} ucxf_rec_{{.Name}}({{.Decl}})
{
    __typeof__({{.Name}}) *real = (__typeof__({{.Name}}) *)
        __atomic_load_n(&ucxf_real[{{.CName}}], __ATOMIC_ACQUIRE);
    uint64_t t0 = ucxf_rec_now();
    {{- if .IsStatusPtr}}
    ucs_status_ptr_t ret = real({{.Args}});

    if (UCXF_UNLIKELY(UCS_PTR_IS_PTR(ret)) && UCXF_UNLIKELY(ucxf_defer_active())) {
        ucxf_defer_forget(ret); /* as ucxf_leave: a request pointer used again carries nothing over */
    }
    ucxf_record_pass({{.CName}}, {{.EpExpr}}, {{.SizeExpr}}, t0, UCS_PTR_IS_PTR(ret) ? UCS_INPROGRESS : UCS_PTR_RAW_STATUS(ret),
                     UCS_PTR_IS_PTR(ret) ? ret : NULL);
    {{- else}}
    ucs_status_t ret = real({{.Args}});

    ucxf_record_pass({{.CName}}, {{.EpExpr}}, {{.SizeExpr}}, t0, ret, NULL);
    {{- end}}
    return ret;
}
{{- end}}

/* Reached by tail calls only: the return address is the caller's
 * (TestWrappersTailCall checks the jumps). */
static {{.Return}} ucxf_slow_{{.Name}}({{.Decl}})
{
    void *caller = __builtin_return_address(0);
    __typeof__({{.Name}}) *real = (__typeof__({{.Name}}) *)
        __atomic_load_n(&ucxf_real[{{.CName}}], __ATOMIC_ACQUIRE);
    {{- if ne .Return.String "unsigned"}}
    struct ucxf_call call;
    {{- end}}
    {{- if or .IsStatusPtr .IsStatus}}
    int code;
    {{- end}}
    {{- if .Defers}}
    ucp_request_param_t deferred_param;
    {{- end}}

    if (real == NULL) {
        real = (__typeof__({{.Name}}) *)ucxf_resolve({{.CName}});
        if (real == NULL) {
            return {{.Unresolved}};
        }
    }
    if (UCXF_UNLIKELY(ucxf_multi_copy)) {
        real = (__typeof__({{.Name}}) *)ucxf_route({{.CName}}, caller, (void *)real);
    }
    {{- if eq .Return.String "unsigned"}}
    return real({{.Args}});
    {{- else}}
    if (!ucxf_armed[{{.CName}}]{{if .Polls}} && !ucxf_defer_active(){{end}}) {
        {{- template "plaincall" .}}
    }
    UCXF_CALL_INIT(&call, {{.CName}}, caller, {{.EpExpr}}, {{.SizeExpr}}, {{.ReqExpr}});
    {{- if .Polls}}
    /* libucp answers first: a fault may replace the status of a request
     * whose operation has completed, never report one still in flight as
     * finished (ucxf_enter decides with call.poll_status, ucxf_leave
     * delivers). */
    call.poll_status = real({{.Args}});
    ucxf_enter(&call);
    code = ucxf_leave(&call, call.poll_status, NULL);
    return code < 0 ? (ucs_status_t)code : call.poll_status;
    {{- else if .IsVoid}}
    ucxf_enter(&call);
    real({{.Args}});
    ucxf_leave(&call, UCS_OK, NULL);
    {{- else}}
    code = ucxf_enter(&call);
    if (code < 0) {
        ucxf_leave(&call, code, NULL);
        {{- if .ForceClose}}
        return ucxf_fault_ep_close((__typeof__(ucp_ep_close_nbx) *)real, {{.Endpoint}}, {{.Param}}, code);
        {{- else}}
        return {{.FailPrefix}}code{{.FailSuffix}};
        {{- end}}
    }
    {{- if .Defers}}
    if (UCXF_UNLIKELY(call.deferred_code != 0 || ucxf_tracks(&call))) {
        {{.Param}} = ucxf_defer_param(&call, {{.Param}}, &deferred_param, {{.CallbackConst}});
        if ({{.Param}} == NULL) {
            /* A parameter this build cannot rewrite: fails at once. */
            code = ucxf_leave(&call, UCS_OK, NULL);
            return {{.FailPrefix}}code{{.FailSuffix}};
        }
    }
    {{- end}}
    {{- if .IsStatusPtr}}
    {
        ucs_status_ptr_t ret = real({{.Args}});
        {{- if .After}}
        if (!UCS_PTR_IS_ERR(ret)) {
            {{.After}}({{.Args}});
        }
        {{- end}}
        code = ucxf_leave(&call, UCS_PTR_IS_PTR(ret) ? UCS_INPROGRESS : UCS_PTR_RAW_STATUS(ret),
                          UCS_PTR_IS_PTR(ret) ? ret : NULL);
        return code < 0 ? UCS_STATUS_PTR(code) : ret;
    }
    {{- else}}
    {
        ucs_status_t ret = real({{.Args}});
        {{- if .After}}
        if (ret == UCS_OK) {
            {{.After}}({{.Args}});
        }
        {{- end}}
        code = ucxf_leave(&call, ret, NULL);
        return code < 0 ? (ucs_status_t)code : ret;
    }
    {{- end}}
    {{- end}}
    {{- end}}
}
{{end}}`
