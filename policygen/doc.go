// Package policygen writes clawnet policies for an agent from what the agent
// already says about itself: its own configuration files (OpenClaw, and the
// MCP client formats of Claude Code, Claude Desktop, Cursor, VS Code, Codex
// and Gemini CLI) with Generate, and its own audit lines with Learn.
//
// It maps each configured LLM provider, channel and MCP server to the hosts,
// ports and protocols it needs through a catalog versioned here (catalog.go),
// and writes a policy in which every rule says where it came from. Start-up
// needs (launcher downloads) go in the policy's setup: part, which applies
// only during an agent's setup phase; needs read from a project's own files
// (.mcp.json, .cursor/mcp.json, .vscode/mcp.json) go in its pending: part,
// each with the sha256 of its file, until Approve moves them into egress (a
// launcher download, pending with phase: setup, into setup:). A
// regeneration against the file it replaces (GenerateOptions.Existing)
// keeps an approval only while that sha256 is unchanged.
//
// It must never reach the network (no DNS lookup, no download: a name it does
// not know stays unknown), never run a command a configuration names, and
// never copy a secret (API keys, tokens, env values, headers, credentials or
// queries in URLs) into a policy, a warning or an error. It reads files only
// through the ReadFile function its caller passes in, and writes one only
// through the WriteNew function a caller passes to Provision.
package policygen
