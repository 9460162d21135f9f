"""Drives Clade's web console in a real browser: Debian's Chromium, headless, through
Playwright for Python (PyPI), unchanged. Signs in, watches a live turn arrive without a
reload, pauses and resumes an agent, approves a tool call, steps a turn paused at a
breakpoint, replays an exported trace, and
tries the console's cookie without its CSRF token and one tenant's sign-in against another
tenant's agents by editing the URL. A screenshot of each panel goes to SHOTS.

The page's Content-Security-Policy forbids evaluating strings, which Playwright's
`wait_for_function` does while it polls: the script waits on selectors instead, so the policy
under test stays on.

Usage: console_browser.py CHROMIUM URL TOKEN RIVAL_TOKEN SESSION TRACE_FILE SHOTS
Prints one JSON object with what each step saw; the Rust test asserts on it.
"""

import json
import os
import sys
import threading
import urllib.request

from playwright.sync_api import sync_playwright

chromium, url, token, rival, session, trace_file, shots = sys.argv[1:8]
got = {}
WAIT = 30_000


def call(method, path, body=None, bearer=token, timeout=60):
    """The API as a plain client: what the console did, seen from outside it."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {bearer}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def shot(page, name):
    page.screenshot(path=os.path.join(shots, f"{name}.png"), full_page=True)


def sign_in(page, with_token):
    page.goto(url + "/console")
    page.wait_for_selector("#token", timeout=WAIT)
    page.fill("#token", with_token)
    page.click("#signin button[type=submit]")


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))

    # A wrong token: the form says why, nothing is signed in.
    sign_in(page, "clade_not-a-real-token")
    page.wait_for_selector("#signin-error:not(:empty)", timeout=WAIT)
    got["bad_token"] = page.text_content("#signin-error")
    shot(page, "signin")

    # Signed in: the agents panel lists this tenant's agents.
    sign_in(page, token)
    page.wait_for_selector("#agents tr[data-agent]", timeout=WAIT)
    got["agents"] = page.eval_on_selector_all("#agents tr[data-agent]", "rows => rows.map(r => r.dataset.agent)")
    got["who"] = page.text_content("#who")
    cookies = context.cookies()
    got["cookie"] = [
        {"name": c["name"], "httpOnly": c["httpOnly"], "sameSite": c["sameSite"]} for c in cookies
    ]
    got["script_sees_cookie"] = page.evaluate("document.cookie")
    shot(page, "agents")

    # The operator looks into the rival tenant, then back into its own.
    page.wait_for_selector("#tenant:not([hidden]) option[value=rival]", state="attached", timeout=WAIT)
    page.select_option("#tenant", "rival")
    page.wait_for_selector("#agents tr[data-agent=bob]", timeout=WAIT)
    got["operator_in_rival"] = page.eval_on_selector_all("#agents tr[data-agent]", "rows => rows.map(r => r.dataset.agent)")
    got["operator_who"] = page.text_content("#who")
    shot(page, "tenants")
    page.select_option("#tenant", "default")
    page.wait_for_selector("#agents tr[data-agent=alice]", timeout=WAIT)

    # An agent's page: a message sent from the console, its turn appearing live.
    page.click("#agents a[href='#/agents/alice']")
    page.wait_for_selector("#timeline", state="attached", timeout=WAIT)
    page.wait_for_selector(".live.on", timeout=WAIT)
    page.fill("#message", "hello console")
    page.click("#send button[type=submit]")
    ours = "#timeline li[data-kind='turn.finished']:has-text('hello console')"
    page.wait_for_selector(ours, timeout=WAIT)
    got["live_turn"] = page.text_content(ours)
    got["reloads"] = page.evaluate("performance.getEntriesByType('navigation').length")
    # The schedule and its history of fires.
    page.wait_for_selector("#schedules li[data-schedule=tick]", timeout=WAIT)
    got["schedule"] = page.text_content("#schedules li[data-schedule=tick] .badge")
    page.click("#schedules details[data-job=tick] summary")
    page.wait_for_selector("#schedules details[data-job=tick] tr.fire", timeout=WAIT)
    got["fires"] = page.eval_on_selector_all("#schedules details[data-job=tick] tr.fire", "rows => rows.length")
    page.wait_for_selector("#runs h2", timeout=WAIT)
    page.wait_for_selector("#lineage p:has-text('It made no agents')", timeout=WAIT)
    got["lineage"] = page.text_content("#lineage")
    shot(page, "agent")

    # Pause, then resume, from the console; the API agrees.
    page.click("button[data-action=pause]")
    page.wait_for_selector("#agent-status .badge.paused", timeout=WAIT)
    got["paused"] = call("GET", "/v1/agents/alice/status")[1].get("paused") is not None
    page.click("button[data-action=resume]")
    page.wait_for_selector("button[data-action=pause]", timeout=WAIT)
    got["resumed"] = call("GET", "/v1/agents/alice/status")[1].get("paused") is None

    # The cookie alone cannot change anything: no CSRF token, or a wrong one.
    got["csrf_missing"] = page.evaluate(
        "fetch('/v1/agents/alice/pause', {method: 'POST', credentials: 'same-origin',"
        " headers: {'Content-Type': 'application/json'}, body: '{}'}).then(r => r.status)"
    )
    got["csrf_wrong"] = page.evaluate(
        "fetch('/v1/agents/alice/pause', {method: 'POST', credentials: 'same-origin',"
        " headers: {'Content-Type': 'application/json', 'X-Clade-Csrf': 'forged'}, body: '{}'})"
        ".then(r => r.status)"
    )
    got["still_running"] = call("GET", "/v1/agents/alice/status")[1].get("paused") is None

    # An approval decided from the console: the waiting call then runs.
    result = {}

    def tool_call():
        result["answer"] = call(
            "POST",
            "/v1/agents/alice/tools/shell.exec/call",
            {"arguments": {"command": "echo from-the-console"}},
        )

    caller = threading.Thread(target=tool_call)
    caller.start()
    page.goto(url + "/console#/approvals")
    page.wait_for_selector("#approvals tr[data-approval] button[data-decide=approve]", timeout=WAIT)
    got["approval_shown"] = page.text_content("#approvals tr[data-approval]")
    shot(page, "approvals")
    page.click("#approvals tr[data-approval] button[data-decide=approve]")
    caller.join(60)
    status, answer = result.get("answer", (None, None))
    got["approved_call"] = {"status": status, "is_error": (answer or {}).get("is_error"),
                            "content": (answer or {}).get("content")}

    # A breakpoint set from the console: the paused turn is shown with its context, and a
    # person's answer, given there, stands for the model's.
    page.goto(url + "/console#/debug")
    page.wait_for_selector("#break-form", timeout=WAIT)
    page.fill("#break-agent", "alice")
    page.select_option("#break-at", "model")
    page.click("#break-form button[type=submit]")
    page.wait_for_selector("#breakpoints tr[data-breakpoint]", timeout=WAIT)
    paused = {}

    def paused_turn():
        paused["answer"] = call("POST", "/v1/events", {
            "agent": "alice", "text": "debug me", "wait": True,
            "source": {"platform": "http", "channel": "debug", "actor": "test"}})

    waiter = threading.Thread(target=paused_turn)
    waiter.start()
    page.wait_for_selector("#stops tr[data-stop] button[data-tell=skip]", timeout=WAIT)
    got["stop_shown"] = page.text_content("#stops tr[data-stop]")
    shot(page, "debug")
    page.fill("#stops tr[data-stop] input.given", "answered from the console")
    page.click("#stops tr[data-stop] button[data-tell=skip]")
    waiter.join(60)
    status, answer = paused.get("answer", (None, None))
    got["skipped_turn"] = {"status": status,
                           "reply": ((answer or {}).get("reply") or {}).get("text")}
    page.click("#breakpoints tr[data-breakpoint] button.danger")
    page.wait_for_selector("#breakpoints p:has-text('No breakpoints')", timeout=WAIT)
    got["breakpoints_left"] = call("GET", "/v1/breakpoints")[1]["items"]

    # The tool invocation log: a turn's call, with its arguments and result, found by its
    # tool's name.
    call("POST", "/v1/events", {
        "agent": "alice", "text": '/tool echo {"text": "in-the-log"}', "wait": True,
        "source": {"platform": "http", "channel": "tools", "actor": "test"}})
    page.goto(url + "/console#/tools")
    page.wait_for_selector("#calls-form", timeout=WAIT)
    page.fill("#calls-tool", "echo")
    page.click("#calls-form button[type=submit]")
    page.wait_for_selector("#calls tr[data-tool='echo']", timeout=WAIT)
    got["tool_calls"] = page.eval_on_selector_all(
        "#calls tr[data-tool]", "rows => rows.map(r => r.textContent)")
    shot(page, "tool-calls")
    page.fill("#calls-tool", "no.such.tool")
    page.click("#calls-form button[type=submit]")
    page.wait_for_selector("#calls p:has-text('No tool calls match')", timeout=WAIT)

    # The other panels render.
    page.goto(url + "/console#/audit")
    page.wait_for_selector("#audit-agent", timeout=WAIT)
    shot(page, "audit")
    page.goto(url + "/console#/usage")
    page.wait_for_selector("main h1", timeout=WAIT)
    page.wait_for_selector("main h1:has-text('Usage')", timeout=WAIT)
    shot(page, "usage")
    page.click("#usage-hours")
    page.wait_for_selector("main h1:has-text('hour')", timeout=WAIT)
    page.wait_for_selector("#usage td.cell[data-tokens]", timeout=WAIT)
    got["usage_hours"] = page.eval_on_selector_all("#usage thead th", "ths => ths.map(t => t.textContent)")
    shot(page, "usage-hours")
    page.goto(url + "/console#/sessions/" + session)
    page.wait_for_selector("#turns li", timeout=WAIT)
    got["session_turns"] = page.eval_on_selector_all("#turns li", "items => items.length")
    shot(page, "session")

    # Replay: an exported trace stepped through offline; a corrupt file is named as such.
    page.goto(url + "/console#/replay")
    page.wait_for_selector("#replay-file", timeout=WAIT)
    page.set_input_files("#replay-file", trace_file)
    page.wait_for_selector("#replay-position", timeout=WAIT)
    got["replay_first"] = page.text_content("#replay-position")
    page.click("#replay-next")
    got["replay_second"] = page.text_content("#replay-position")
    got["replay_detail"] = page.text_content("#replay-detail")
    shot(page, "replay")
    page.set_input_files(
        "#replay-file",
        files=[{"name": "broken.jsonl", "mimeType": "application/json", "buffer": b"{not json\n"}],
    )
    page.wait_for_selector("#replay-error:not(:empty)", timeout=WAIT)
    got["replay_corrupt"] = page.text_content("#replay-error")
    future = {"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.version", "value": {"stringValue": "99.0.0"}}]}, "scopeSpans": []}]}
    page.set_input_files(
        "#replay-file",
        files=[{"name": "future.jsonl", "mimeType": "application/json",
                "buffer": (json.dumps(future) + "\n").encode()}],
    )
    page.wait_for_selector("#replay-error:has-text('99.0.0')", timeout=WAIT)
    got["replay_newer"] = page.text_content("#replay-error")

    # Signed out, the cookie no longer stands for anything.
    page.goto(url + "/console#/agents")
    page.wait_for_selector("#agents", timeout=WAIT)
    page.click("#sign-out")
    page.wait_for_selector("#token", timeout=WAIT)
    got["after_sign_out"] = page.evaluate(
        "fetch('/v1/agents', {credentials: 'same-origin'}).then(r => r.status)"
    )

    # Another tenant: its own agents only; alice's pages, reached by editing the URL, are
    # not found.
    sign_in(page, rival)
    page.wait_for_selector("#agents tr[data-agent]", timeout=WAIT)
    got["rival_agents"] = page.eval_on_selector_all("#agents tr[data-agent]", "rows => rows.map(r => r.dataset.agent)")
    page.goto(url + "/console#/agents/alice")
    page.wait_for_selector("#failure", timeout=WAIT)
    got["rival_agent_page"] = page.text_content("#failure")
    page.goto(url + "/console#/agents")
    page.wait_for_selector("#agents", timeout=WAIT)
    page.goto(url + "/console#/sessions/" + session)
    page.wait_for_selector("#failure", timeout=WAIT)
    got["rival_session_page"] = page.text_content("#failure")
    shot(page, "isolation")
    got["rival_fetch"] = page.evaluate(
        "fetch('/v1/agents/alice', {credentials: 'same-origin'}).then(r => r.status)"
    )

    got["page_errors"] = errors
    browser.close()

print(json.dumps(got))
