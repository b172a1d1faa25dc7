"""A fake Discord that the real discord.py client talks to, over real HTTP and a real websocket.

``FakeDiscord`` is an ``aiohttp.web`` application on ``127.0.0.1`` (ephemeral port) inside the test
process. It serves

* the **gateway** websocket: HELLO -> IDENTIFY (token and intents checked and recorded) -> READY ->
  GUILD_CREATE per guild, heartbeat ACKs, RESUME with replay of missed events, RECONNECT /
  INVALID_SESSION on request, REQUEST_GUILD_MEMBERS answered with one chunk, ``zlib-stream``
  transport compression when the client asks for it;
* the **REST** routes a bot uses (users, application info, application commands, interaction
  callbacks, interaction webhooks, channel messages, reactions, typing, DM channels), recording
  every request, multipart bodies parsed;
* a **CDN** (``/attachments/...``) for attachments of incoming messages and of everything the bot
  uploads, recording every download.

Point discord.py at it the way the product does from its settings::

    discord.http.Route.BASE = fake.api_base                                # DISCORD_API_BASE
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)  # DISCORD_GATEWAY_URL

(or ``with fake.patch_discord_py(): ...``). Then drive it from the test: ``send_message``,
``send_voice_message``, ``slash_command``, ``click_button``, ``submit_modal``, ``dispatch``; and
assert on ``calls``, ``messages``, ``interactions``, ``downloads`` or await ``wait_for_call``,
``wait_for_message``, ``wait_for_response``.

Behaviour copied from Discord because the product must cope with it:

* interaction callbacks after ``ack_deadline`` (3 s) answer 404 "Unknown interaction" (10062); a
  second callback answers 400 (40060);
* interaction webhook tokens expire after ``token_lifetime`` (15 min; tests shorten it): webhook
  routes then answer 401 "Invalid Webhook Token" (50027);
* the first follow-up after a "thinking" defer (callback type 5) replaces the loading message;
* without the MESSAGE_CONTENT intent, content/attachments/embeds/components of other users'
  guild messages that do not mention the bot arrive empty;
* a wrong token is refused by REST (401 -> ``discord.LoginFailure``) and by the gateway (close
  4004); intents listed in ``disallowed_intents`` close the gateway with 4014;
* messages over 2000 characters, empty messages and uploads over ``upload_limit`` are refused;
* a channel message created with ``enforce_nonce`` and a ``nonce`` already used in that channel
  returns the earlier message instead of creating a new one (discord.py sends both on every
  ``send``).

The package is split by concern: :mod:`.protocol` (Discord's numbers and the fake's rules),
:mod:`.world` (users, guilds, channels, messages and their payloads), :mod:`.http` (recorded calls,
the API route table, injected failures), :mod:`.cdn`, :mod:`.gateway`, :mod:`.messages` (channel
message routes, nonces, intent rules), :mod:`.interactions` (callbacks, webhooks, component clicks,
modals), :mod:`.commands` (application commands, slash commands) and :mod:`.app` (``FakeDiscord``,
which assembles them). It is test infrastructure: it imports nothing from the product, and
discord.py only lazily in :meth:`FakeDiscord.patch_discord_py`.
"""

from __future__ import annotations

from .app import FakeDiscord
from .gateway import GatewaySession
from .http import RecordedCall, RecordedFile
from .interactions import FakeInteraction
from .protocol import DEFAULT_PERMISSIONS, AttachmentSpec, Intents, MessageFlags
from .world import FakeChannel, FakeGuild, FakeUser, snowflake_time

__all__ = [
    "DEFAULT_PERMISSIONS",
    "AttachmentSpec",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeInteraction",
    "FakeUser",
    "GatewaySession",
    "Intents",
    "MessageFlags",
    "RecordedCall",
    "RecordedFile",
    "snowflake_time",
]
