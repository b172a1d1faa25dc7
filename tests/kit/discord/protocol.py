"""Discord's numbers the fake speaks: intents, flags, opcodes, interaction and option types, limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DISCORD_EPOCH_MS = 1420070400000


class Intents:
    """Gateway intent bits the fake looks at."""

    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    DIRECT_MESSAGES = 1 << 12
    MESSAGE_CONTENT = 1 << 15


class MessageFlags:
    """Message flag bits the fake looks at."""

    SUPPRESS_EMBEDS = 1 << 2
    EPHEMERAL = 1 << 6
    LOADING = 1 << 7
    SUPPRESS_NOTIFICATIONS = 1 << 12
    IS_VOICE_MESSAGE = 1 << 13
    IS_COMPONENTS_V2 = 1 << 15


#: Flags a bot may set when it creates a channel message.
CHANNEL_MESSAGE_FLAGS = (
    MessageFlags.SUPPRESS_EMBEDS | MessageFlags.SUPPRESS_NOTIFICATIONS | MessageFlags.IS_COMPONENTS_V2
)
#: Flags a bot may set on an interaction response or follow-up (ephemeral too).
INTERACTION_MESSAGE_FLAGS = CHANNEL_MESSAGE_FLAGS | MessageFlags.EPHEMERAL

# VIEW_CHANNEL, SEND_MESSAGES, ADD_REACTIONS, EMBED_LINKS, ATTACH_FILES, READ_MESSAGE_HISTORY,
# USE_EXTERNAL_EMOJIS, USE_APPLICATION_COMMANDS, CREATE_PUBLIC_THREADS, SEND_MESSAGES_IN_THREADS
DEFAULT_PERMISSIONS = (
    (1 << 10) | (1 << 11) | (1 << 6) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 18) | (1 << 31) | (1 << 35) | (1 << 38)
)

# Gateway opcodes
OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_PRESENCE, OP_VOICE_STATE = 0, 1, 2, 3, 4
OP_RESUME, OP_RECONNECT, OP_REQUEST_MEMBERS, OP_INVALID_SESSION = 6, 7, 8, 9
OP_HELLO, OP_HEARTBEAT_ACK = 10, 11

# Interaction types and callback types
INTERACTION_PING, INTERACTION_COMMAND, INTERACTION_COMPONENT = 1, 2, 3
INTERACTION_AUTOCOMPLETE, INTERACTION_MODAL_SUBMIT = 4, 5
CB_PONG, CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_DEFERRED_UPDATE = 1, 4, 5, 6
CB_UPDATE_MESSAGE, CB_AUTOCOMPLETE, CB_MODAL = 7, 8, 9

# Application command option types
OPT_SUB_COMMAND, OPT_SUB_COMMAND_GROUP, OPT_STRING, OPT_INTEGER, OPT_BOOLEAN = 1, 2, 3, 4, 5
OPT_USER, OPT_CHANNEL, OPT_ROLE, OPT_MENTIONABLE, OPT_NUMBER, OPT_ATTACHMENT = 6, 7, 8, 9, 10, 11

# Message types
MESSAGE_DEFAULT, MESSAGE_REPLY, MESSAGE_CHAT_INPUT_COMMAND = 0, 19, 20

MAX_CONTENT_LENGTH = 2000
MAX_EMBEDS = 10

#: What an incoming attachment may be given as:
#: ``(filename, data)``, ``(filename, data, content_type)``,
#: ``(filename, data, content_type, extra_fields)`` or a mapping with ``filename``, ``data`` and
#: optionally ``content_type`` plus any Discord attachment field (``duration_secs``, ``waveform``
#: -- bytes are base64-encoded --, ``description``, ``width``, ``height``, ``flags``, ...).
AttachmentSpec = (
    tuple[str, bytes] | tuple[str, bytes, str] | tuple[str, bytes, str, Mapping[str, Any]] | Mapping[str, Any]
)


@dataclass
class Rules:
    """The rules this fake Discord enforces; one object shared by its parts, so a test may change
    one of them (``fake.ack_deadline = 0.1``) while the fake runs. See :class:`FakeDiscord`."""

    token: str
    token_lifetime: float = 15 * 60
    ack_deadline: float = 3.0
    heartbeat_interval_ms: int = 41250
    recommended_shards: int = 1  # GET /gateway/bot's "shards" (what AutoShardedBot starts by default)
    disallowed_intents: int = 0
    enforce_message_content_intent: bool = True
    echo_bot_messages: bool = True
    upload_limit: int = 10 * 1024 * 1024
