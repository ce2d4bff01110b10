// hoop approvals page.
//
// Rules this file keeps (the Content-Security-Policy enforces the first two):
// - Text from the API (statements, users, application names, reasons) is
//   only ever put in the page with textContent or setAttribute: never as
//   HTML. The page's structure comes from index.html's <template>.
// - No inline script, no eval, no request to anything but this hoop.
// - The bearer token lives in sessionStorage (this tab only) and travels only
//   in the Authorization header. No cookie is used, so no other site can
//   act with it.
'use strict';

(() => {
  const TOKEN_KEY = 'hoop.token';
  const LOGIN_KEY = 'hoop.oidc.pending';
  const DECIDED_SHOWN = 50;
  // How long one list request may wait on the server for a change.
  const WAIT_SECONDS = 25;
  // After a failed request, wait this long before the next.
  const RETRY_MS = 1500;

  // Relative to /ui/, so hoop also works behind a path prefix.
  const api = (path) => new URL('../api/' + path, document.baseURI).toString();

  const $ = (id) => document.getElementById(id);
  const state = {
    token: null,
    me: null,
    follow: null, // AbortController of the live list
    cards: new Map(), // hold id -> card element
    skewMs: 0, // server clock minus ours
    focused: false,
  };

  // ---- small helpers ----------------------------------------------------

  function show(id, visible) {
    $(id).hidden = !visible;
  }

  function setText(element, text) {
    element.textContent = text == null ? '' : String(text);
  }

  function base64url(bytes) {
    let binary = '';
    for (const b of bytes) binary += String.fromCharCode(b);
    return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function randomString(bytes) {
    return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
  }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      if (signal) signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
    });
  }

  function duration(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = s % 60;
    if (h > 0) return `${h}h ${String(m).padStart(2, '0')}m`;
    if (m > 0) return `${m}m ${String(sec).padStart(2, '0')}s`;
    return `${sec}s`;
  }

  function localTime(iso) {
    if (!iso) return '';
    const at = new Date(iso);
    return Number.isNaN(at.getTime()) ? iso : at.toLocaleString();
  }

  function errorText(status, body) {
    if (body && typeof body.error === 'string') return body.error;
    return `HTTP ${status}`;
  }

  // One API call with the bearer token. Throws {status, message} on failure;
  // a 401 ends the session.
  async function call(method, path, body, signal) {
    const headers = { Authorization: 'Bearer ' + state.token };
    const init = { method, headers, cache: 'no-store', credentials: 'omit', signal };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const response = await fetch(api(path), init);
    let json = null;
    try { json = await response.json(); } catch { /* empty or not JSON */ }
    if (response.status === 401) {
      signOut('Signed out: ' + errorText(401, json) + '.');
      throw { status: 401, message: errorText(401, json) };
    }
    if (!response.ok) throw { status: response.status, message: errorText(response.status, json) };
    return json;
  }

  // ---- signing in -------------------------------------------------------

  async function whoami(token) {
    const response = await fetch(api('whoami'), {
      headers: { Authorization: 'Bearer ' + token }, cache: 'no-store', credentials: 'omit',
    });
    let json = null;
    try { json = await response.json(); } catch { /* not JSON */ }
    if (!response.ok) throw new Error(errorText(response.status, json));
    return json;
  }

  async function signIn(token) {
    const me = await whoami(token);
    sessionStorage.setItem(TOKEN_KEY, token);
    state.token = token;
    state.me = me;
    const groups = me.groups && me.groups.length ? ` (${me.groups.join(', ')})` : '';
    setText($('who-name'), me.identity + groups);
    show('who', true);
    show('login', false);
    show('loading', false);
    show('app', true);
    startFollowing();
  }

  function signOut(why) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.me = null;
    if (state.follow) state.follow.abort();
    state.follow = null;
    for (const card of state.cards.values()) card.remove();
    state.cards.clear();
    $('decided').querySelector('tbody').replaceChildren();
    show('who', false);
    show('app', false);
    showLogin(why);
  }

  function showLogin(error) {
    show('loading', false);
    show('login', true);
    setText($('login-error'), error || '');
    show('login-error', Boolean(error));
    $('token').value = '';
    $('token').focus();
  }

  async function loadLoginOptions() {
    let settings = null;
    try {
      const response = await fetch(api('ui/settings'), { cache: 'no-store', credentials: 'omit' });
      if (response.ok) settings = await response.json();
    } catch { /* the token form still works */ }
    if (settings && settings.oidc) {
      state.oidc = settings.oidc;
      setText($('oidc-issuer'), new URL(settings.oidc.authorization_endpoint).host);
      show('oidc-login', true);
    } else if (settings && settings.oidc_error) {
      setText($('oidc-unavailable'), 'Single sign-on is unavailable: ' + settings.oidc_error);
      show('oidc-unavailable', true);
    }
  }

  function redirectUri() {
    return new URL('.', document.baseURI).toString();
  }

  async function startOidcLogin() {
    if (!window.isSecureContext || !crypto.subtle) {
      showLogin('Single sign-on needs a secure page (https, or localhost): the browser will not compute the PKCE challenge here.');
      return;
    }
    const oidc = state.oidc;
    const verifier = randomString(48);
    const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
    const pending = {
      state: randomString(24),
      nonce: randomString(24),
      verifier,
      redirect_uri: redirectUri(),
    };
    sessionStorage.setItem(LOGIN_KEY, JSON.stringify(pending));
    const target = new URL(oidc.authorization_endpoint);
    const params = target.searchParams;
    params.set('response_type', 'code');
    params.set('client_id', oidc.client_id);
    params.set('redirect_uri', pending.redirect_uri);
    params.set('scope', oidc.scope);
    params.set('state', pending.state);
    params.set('nonce', pending.nonce);
    params.set('code_challenge', base64url(new Uint8Array(digest)));
    params.set('code_challenge_method', 'S256');
    window.location.assign(target.toString());
  }

  // Back from the issuer with ?code=…&state=… (or ?error=…).
  async function finishOidcLogin(query) {
    const pendingText = sessionStorage.getItem(LOGIN_KEY);
    sessionStorage.removeItem(LOGIN_KEY);
    // The code must not stay in the address bar or the history.
    history.replaceState(null, '', window.location.pathname + window.location.hash);
    const pending = pendingText ? JSON.parse(pendingText) : null;
    if (!pending || query.get('state') !== pending.state) {
      throw new Error('this sign-in answer does not belong to a sign-in started in this tab; sign in again');
    }
    if (query.has('error')) {
      throw new Error(`the issuer refused: ${query.get('error')} ${query.get('error_description') || ''}`.trim());
    }
    const response = await fetch(api('ui/oidc/token'), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      cache: 'no-store',
      credentials: 'omit',
      body: JSON.stringify({
        code: query.get('code'),
        code_verifier: pending.verifier,
        redirect_uri: pending.redirect_uri,
        nonce: pending.nonce,
      }),
    });
    let json = null;
    try { json = await response.json(); } catch { /* not JSON */ }
    if (!response.ok) throw new Error(errorText(response.status, json));
    await signIn(json.token);
  }

  // ---- the live list ----------------------------------------------------

  function setStatus(text) {
    setText($('status'), text);
  }

  function noteClock(response) {
    const date = Date.parse(response.headers.get('Date') || '');
    if (Number.isNaN(date)) return;
    const skew = date - Date.now();
    // Date has whole seconds: only correct clocks that are clearly off.
    state.skewMs = Math.abs(skew) > 1500 ? skew : 0;
  }

  async function startFollowing() {
    if (state.follow) state.follow.abort();
    const controller = new AbortController();
    state.follow = controller;
    let etag = null;
    while (!controller.signal.aborted) {
      try {
        const headers = { Authorization: 'Bearer ' + state.token };
        let path = `holds?decided=${DECIDED_SHOWN}`;
        if (etag) {
          headers['If-None-Match'] = etag;
          path += `&wait=${WAIT_SECONDS}`;
        }
        const response = await fetch(api(path), {
          headers, cache: 'no-store', credentials: 'omit', signal: controller.signal,
        });
        if (response.status === 401) {
          let json = null;
          try { json = await response.json(); } catch { /* not JSON */ }
          signOut('Signed out: ' + errorText(401, json) + '.');
          return;
        }
        if (response.status === 304) continue;
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        noteClock(response);
        etag = response.headers.get('ETag');
        render(await response.json());
        setStatus('Live: changes appear as they happen.');
      } catch (error) {
        if (controller.signal.aborted) return;
        setStatus('Connection to hoop lost; retrying…');
        etag = null;
        await sleep(RETRY_MS, controller.signal);
      }
    }
  }

  function render(holds) {
    const pending = holds.filter((h) => h.state === 'pending');
    const decided = holds.filter((h) => h.state !== 'pending');
    renderPending(pending);
    renderDecided(decided);
    tick();
    focusLinkedHold();
  }

  function renderPending(holds) {
    const list = $('pending');
    const seen = new Set();
    for (const hold of holds) {
      seen.add(hold.id);
      let card = state.cards.get(hold.id);
      if (!card) {
        card = newCard(hold);
        state.cards.set(hold.id, card);
      }
      updateCard(card, hold);
      list.appendChild(card); // keeps the API's order (oldest first)
    }
    for (const [id, card] of state.cards) {
      if (!seen.has(id)) {
        card.remove();
        state.cards.delete(id);
      }
    }
    setText($('pending-count'), holds.length || '');
    show('no-pending', holds.length === 0);
  }

  function newCard(hold) {
    const card = $('hold-card').content.firstElementChild.cloneNode(true);
    card.id = 'hold-' + hold.id;
    card.dataset.hold = hold.id;
    setText(card.querySelector('.hold-id'), hold.id);
    setText(card.querySelector('.rule'), hold.rule);
    setText(card.querySelector('.message'), hold.message);
    for (const dd of card.querySelectorAll('.who dd')) {
      setText(dd, hold.session[dd.dataset.field]);
    }
    // A Kubernetes pod's session: namespace/pod and its service account.
    const pod = card.querySelector('.who dd[data-pod]');
    if (pod) {
      const w = hold.workload;
      setText(pod, w ? w.namespace + '/' + w.pod + ' (service account ' + w.service_account + ')' : '');
      pod.parentElement.hidden = !w;
    }
    // The statement is attacker-controlled text: textContent only.
    setText(card.querySelector('.statement'), hold.statement);
    card.querySelector('.approve').addEventListener('click', () => decide(card, 'approve'));
    card.querySelector('.deny').addEventListener('click', () => {
      card.querySelector('.deny-form').hidden = false;
      card.querySelector('.actions').hidden = true;
      card.querySelector('.reason').focus();
    });
    card.querySelector('.cancel-deny').addEventListener('click', () => {
      card.querySelector('.deny-form').hidden = true;
      card.querySelector('.actions').hidden = !card.mayDecide;
    });
    card.querySelector('.deny-form').addEventListener('submit', (event) => {
      event.preventDefault();
      decide(card, 'deny', card.querySelector('.reason').value.trim());
    });
    const details = card.querySelector('.context');
    details.addEventListener('toggle', () => {
      if (details.open) loadContext(card);
    });
    return card;
  }

  function updateCard(card, hold) {
    card.hold = hold;
    card.expiresAt = Date.parse(hold.expires_at);
    card.mayDecide = Boolean(hold.may_decide);
    const approvedBy = hold.decisions.filter((d) => d.decision === 'approve').map((d) => d.identity);
    const needed = hold.min_approvals > 1
      ? `${hold.min_approvals - hold.approvals_needed} of ${hold.min_approvals} approvals`
      : '';
    const by = approvedBy.length ? `approved so far by ${approvedBy.join(', ')}` : '';
    setText(card.querySelector('.approvals'), [needed, by].filter(Boolean).join(': '));
    const denying = !card.querySelector('.deny-form').hidden;
    card.querySelector('.actions').hidden = !card.mayDecide || denying;
    if (!card.mayDecide) card.querySelector('.deny-form').hidden = true;
    const mine = state.me && approvedBy.includes(state.me.identity);
    const approve = card.querySelector('.approve');
    approve.disabled = Boolean(mine);
    approve.title = mine ? 'You approved this already; another approver must too.' : '';
    const outsider = !card.mayDecide && hold.approvers.length > 0;
    card.querySelector('.not-approver').hidden = !outsider;
    setText(card.querySelector('.approver-groups'), hold.approvers.join(', '));
  }

  async function decide(card, action, reason) {
    const id = card.dataset.hold;
    const error = card.querySelector('.error');
    error.hidden = true;
    const buttons = card.querySelectorAll('button');
    for (const b of buttons) b.disabled = true;
    try {
      await call('POST', `holds/${encodeURIComponent(id)}/${action}`, reason ? { reason } : {});
      // The live list shows the outcome at once.
    } catch (failure) {
      if (failure.status !== 401) {
        setText(error, `Could not ${action}: ${failure.message || failure}`);
        error.hidden = false;
      }
    } finally {
      for (const b of buttons) b.disabled = false;
      // Back to what the hold allows (an approver who approved cannot again).
      updateCard(card, card.hold);
    }
  }

  async function loadContext(card) {
    const list = card.querySelector('.context-list');
    const note = card.querySelector('.context-note');
    setText(note, 'Reading the session recording…');
    try {
      const context = await call('GET', `holds/${encodeURIComponent(card.dataset.hold)}/context`);
      const items = context.statements.map((s) => {
        const li = document.createElement('li');
        if (s.held) li.className = 'held';
        const meta = document.createElement('div');
        meta.className = 'context-meta';
        const parts = [localTime(s.ts)];
        if (s.held) parts.push('this hold');
        else if (s.verdict && s.verdict !== 'allow') parts.push(`${s.verdict} by rule ${s.rule || '?'}`);
        if (s.outcome) parts.push(s.outcome);
        setText(meta, parts.join(' · '));
        const sql = document.createElement('pre');
        setText(sql, s.sql);
        li.append(meta, sql);
        return li;
      });
      list.replaceChildren(...items);
      const lines = [];
      if (context.recording) lines.push(`From recording ${context.recording}.`);
      if (context.note) lines.push(context.note + '.');
      if (!items.length && !context.note) lines.push('The recording holds no statements before this one.');
      setText(note, lines.join(' '));
    } catch (failure) {
      setText(note, 'Could not read the session recording: ' + (failure.message || failure));
    }
  }

  function renderDecided(holds) {
    const body = $('decided').querySelector('tbody');
    const rows = holds.map((hold) => {
      const tr = document.createElement('tr');
      tr.dataset.hold = hold.id;
      const cell = (text, className) => {
        const td = document.createElement('td');
        if (className) td.className = className;
        setText(td, text);
        tr.appendChild(td);
        return td;
      };
      cell(localTime(hold.decided_at));
      cell(hold.id, 'mono');
      cell(hold.state, 'state-' + hold.state);
      const deciders = hold.decisions.map((d) => `${d.identity} (${d.decision === 'approve' ? 'approved' : 'denied'})`);
      cell(deciders.join(', ') || (hold.state === 'timeout' ? 'nobody in time' : ''));
      cell(hold.reason || '');
      const statement = cell(hold.statement.length > 200 ? hold.statement.slice(0, 200) + '…' : hold.statement, 'statement-cell');
      statement.setAttribute('title', hold.statement);
      return tr;
    });
    body.replaceChildren(...rows);
    show('decided', rows.length > 0);
    show('no-decided', rows.length === 0);
  }

  // The countdowns, once a second.
  function tick() {
    const now = Date.now() + state.skewMs;
    for (const card of state.cards.values()) {
      const left = card.expiresAt - now;
      setText(card.querySelector('.countdown'), left > 0 ? `${duration(left)} left` : 'timing out…');
      card.classList.toggle('urgent', left < 60000);
    }
  }

  // A Slack message links to /ui/#hold=<id>.
  function focusLinkedHold() {
    if (state.focused) return;
    const match = /^#hold=([A-Za-z0-9-]+)$/.exec(window.location.hash);
    if (!match) return;
    const card = state.cards.get(match[1]);
    if (!card) return;
    state.focused = true;
    card.classList.add('highlight');
    card.scrollIntoView({ block: 'center' });
  }

  // ---- start ------------------------------------------------------------

  async function start() {
    const local = ['localhost', '127.0.0.1', '[::1]'].includes(window.location.hostname);
    show('insecure', window.location.protocol === 'http:' && !local);
    $('token-form').addEventListener('submit', async (event) => {
      event.preventDefault();
      const token = $('token').value.trim();
      if (!token) return;
      try {
        await signIn(token);
      } catch (error) {
        showLogin('That token was not accepted: ' + error.message);
      }
    });
    $('oidc-button').addEventListener('click', () => {
      startOidcLogin().catch((error) => showLogin('Single sign-on failed: ' + error.message));
    });
    $('sign-out').addEventListener('click', () => signOut());
    setInterval(tick, 1000);
    await loadLoginOptions();

    const query = new URLSearchParams(window.location.search);
    if (query.has('code') || query.has('error')) {
      try {
        await finishOidcLogin(query);
      } catch (error) {
        showLogin('Single sign-on failed: ' + error.message);
      }
      return;
    }
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) {
      try {
        await signIn(saved);
        return;
      } catch (error) {
        sessionStorage.removeItem(TOKEN_KEY);
        showLogin('Signed out: ' + error.message);
        return;
      }
    }
    showLogin();
  }

  start();
})();
