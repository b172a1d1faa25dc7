"""The fake Discord, proven with a small real ``commands.Bot`` (discord.py) connected to it over
HTTP and a websocket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import time
import warnings
from collections.abc import AsyncIterator

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from devkit.discord import FakeDiscord, Intents, MessageFlags

pytestmark = pytest.mark.timeout(30)

TOKEN = "test-bot-token"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x08\x08\x02\x00\x00\x00" + b"\x00" * 32
OGG = b"OggS\x00\x02" + bytes(range(256)) * 4


# ------------------------------------------------------------------------------------------------
# A minimal bot: one slash command with an attachment, a persistent DynamicItem button, a voice
# message listener, a prefix command. Everything it sees is recorded on the bot for assertions.
# ------------------------------------------------------------------------------------------------


class RegenButton(discord.ui.DynamicItem[discord.ui.Button], template=r"voxcanvas:regen:(?P<job>[0-9]+)"):
    def __init__(self, job: int) -> None:
        super().__init__(discord.ui.Button(label="Regenerate", custom_id=f"voxcanvas:regen:{job}"))
        self.job = job

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match):  # type: ignore[override]
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        interaction.client.events.append(("regen", self.job, interaction.user.id))  # type: ignore[attr-defined]
        await interaction.response.send_message(f"Regenerating job {self.job}", ephemeral=True)


def regen_view(job: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(RegenButton(job))
    return view


@app_commands.command(name="draw", description="Draw a picture")
@app_commands.describe(prompt="What to draw", sketch="An optional sketch")
async def draw(interaction: discord.Interaction, prompt: str, sketch: discord.Attachment | None = None) -> None:
    await interaction.response.defer(thinking=True)
    data = await sketch.read() if sketch is not None else b""
    file = discord.File(io.BytesIO(b"IMG:" + prompt.encode() + b":" + data), filename="result.png")
    await interaction.followup.send(f"Here is {prompt!r}", file=file, view=regen_view(42))


@app_commands.command(name="slow", description="Defers and leaves the rest to the test")
async def slow(interaction: discord.Interaction) -> None:
    await interaction.response.defer(thinking=True)
    interaction.client.pending.put_nowait(interaction)  # type: ignore[attr-defined]


@app_commands.command(name="sleepy", description="Answers too late")
async def sleepy(interaction: discord.Interaction) -> None:
    await asyncio.sleep(0.3)
    try:
        await interaction.response.send_message("finally")
    except discord.HTTPException as exc:
        interaction.client.errors.put_nowait(exc)  # type: ignore[attr-defined]


class IdeaModal(discord.ui.Modal, title="Your idea"):
    idea = discord.ui.TextInput(label="Idea", custom_id="idea")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"idea: {self.idea.value}")


@app_commands.command(name="ask", description="Opens a modal")
async def ask(interaction: discord.Interaction) -> None:
    await interaction.response.send_modal(IdeaModal())


class StyleView(discord.ui.View):
    """A persistent view (timeout=None, fixed custom_ids) with a select and an edit-in-place button."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.select(custom_id="style", options=[discord.SelectOption(label=s, value=s) for s in ("oil", "ink")])
    async def style(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
        await interaction.response.defer()  # type 6: deferred update
        interaction.client.events.append(("style", tuple(select.values)))  # type: ignore[attr-defined]

    @discord.ui.button(label="Done", custom_id="done")
    async def done(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        button.disabled = True
        await interaction.response.edit_message(content="finished", view=self)  # type 7


class MiniBot(commands.Bot):
    def __init__(self, *, message_content: bool = True) -> None:
        intents = discord.Intents.default()
        intents.message_content = message_content
        # guild_ready_timeout: discord.py always waits this long after the last GUILD_CREATE
        # before on_ready (default 2 s), however fast the guilds arrive.
        super().__init__(command_prefix="!", intents=intents, guild_ready_timeout=0.05)
        self.events: list[tuple] = []
        self.voice: asyncio.Queue = asyncio.Queue()
        self.pending: asyncio.Queue = asyncio.Queue()
        self.errors: asyncio.Queue = asyncio.Queue()
        self.ready_event = asyncio.Event()

    async def setup_hook(self) -> None:
        self.add_dynamic_items(RegenButton)
        self.add_view(StyleView())
        for cmd in (draw, slow, sleepy, ask):
            self.tree.add_command(cmd)
        await self.tree.sync()

        @self.command(name="ping")
        async def ping(ctx: commands.Context) -> None:
            async with ctx.typing():
                pass
            await ctx.message.add_reaction("\N{THUMBS UP SIGN}")
            await ctx.reply("pong")

    async def on_ready(self) -> None:
        self.ready_event.set()

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot:
            return
        self.events.append(("message", message.id, message.content))
        if message.flags.voice and message.attachments:
            attachment = message.attachments[0]
            self.voice.put_nowait((message, attachment, await attachment.read()))
            return
        await self.process_commands(message)


async def start_bot(bot: commands.Bot, token: str = TOKEN) -> asyncio.Task:
    """Start the bot; return its task once on_ready fired (or raise what start() raised)."""
    task = asyncio.create_task(bot.start(token))
    ready = asyncio.create_task(bot.ready_event.wait())  # type: ignore[attr-defined]
    done, _ = await asyncio.wait({task, ready}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()  # raises
    if ready not in done:
        ready.cancel()
        task.cancel()
        raise TimeoutError("bot not ready within 5 s")
    return task


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(TOKEN) as fake:
        with fake.patch_discord_py():
            yield fake


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[MiniBot]:
    bot = MiniBot()
    started = time.monotonic()
    task = await start_bot(bot)
    bot.ready_after = time.monotonic() - started  # type: ignore[attr-defined]
    yield bot
    await bot.close()
    await asyncio.wait_for(task, 5)
    assert fake.unknown_calls == [], "the bot called routes the fake does not know"


# ------------------------------------------------------------------------------------------------
# Connection
# ------------------------------------------------------------------------------------------------


async def test_login_and_ready_are_fast_and_the_world_is_cached(fake: FakeDiscord, bot: MiniBot) -> None:
    assert bot.ready_after < 2.0  # type: ignore[attr-defined]
    assert bot.user is not None and bot.user.id == fake.bot_user.id
    assert bot.application_id == fake.application_id
    guild = bot.get_guild(fake.guild.id)
    assert guild is not None and guild.name == "VoxCanvas Test"
    assert isinstance(guild.get_channel(fake.channel.id), discord.TextChannel)
    # Without the GUILD_MEMBERS intent Discord lists only the bot's own member.
    assert guild.me is not None and guild.member_count == 3 and guild.get_member(fake.user.id) is None

    # The client asked for JSON over zlib-stream, v10, and the fake answered compressed.
    assert fake.gateway_queries[0] == {"v": "10", "encoding": "json", "compress": "zlib-stream"}
    session = await fake.wait_until_connected()
    assert session.intents is not None and session.intents & Intents.MESSAGE_CONTENT
    assert session.properties["browser"] == "discord.py"
    # discord.py heartbeats as soon as HELLO arrives; the fake ACKs it.
    assert any(p["op"] == 1 for p in fake.gateway_received)
    login = fake.find_calls(route="GET /users/@me")[0]
    assert login.headers["Authorization"] == f"Bot {TOKEN}" and login.status == 200
    assert fake.find_calls(route="GET /oauth2/applications/@me")


async def test_tree_sync_is_recorded(fake: FakeDiscord, bot: MiniBot) -> None:
    assert fake.sync_count() == 1 and fake.sync_count(fake.guild.id) == 0
    names = {c["name"]: c for c in fake.commands()}
    assert set(names) == {"draw", "slow", "sleepy", "ask"}
    options = {o["name"]: (o["type"], o.get("required", False)) for o in names["draw"]["options"]}
    assert options == {"prompt": (3, True), "sketch": (11, False)}
    (put,) = fake.find_calls(route="PUT /applications/{application_id}/commands")
    assert put.params["application_id"] == str(fake.application_id)
    assert [c["name"] for c in put.json] == [c["name"] for c in fake.commands()]


async def test_single_commands_are_created_edited_and_deleted(fake: FakeDiscord, bot: MiniBot) -> None:
    http, app_id = bot.http, fake.application_id
    (draw,) = [c for c in await http.get_global_commands(app_id) if c["name"] == "draw"]
    assert (await http.get_global_command(app_id, draw["id"]))["description"] == "Draw a picture"
    edited = await http.edit_global_command(app_id, draw["id"], {"description": "Paint"})
    assert edited["id"] == draw["id"] and edited["version"] != draw["version"]
    assert [c["description"] for c in fake.commands() if c["name"] == "draw"] == ["Paint"]

    guild_only = await http.upsert_guild_command(app_id, fake.guild.id, {"name": "queue", "description": "Queue"})
    assert guild_only["guild_id"] == str(fake.guild.id) and fake.commands(fake.guild.id) == [guild_only]
    again = await http.upsert_guild_command(app_id, fake.guild.id, {"name": "queue", "description": "Jobs"})
    assert again["id"] == guild_only["id"] and [c["description"] for c in fake.commands(fake.guild.id)] == ["Jobs"]

    await http.delete_global_command(app_id, draw["id"])
    assert "draw" not in {c["name"] for c in fake.commands()}
    with pytest.raises(discord.NotFound):
        await http.get_global_command(app_id, draw["id"])
    with pytest.raises(discord.Forbidden):
        await http.get_global_commands(fake.application_id + 1)
    assert fake.sync_count() == 1  # single-command routes are not bulk syncs


async def test_wrong_token_is_a_login_failure(fake: FakeDiscord) -> None:
    bot = MiniBot()
    with pytest.raises(discord.LoginFailure):
        await bot.login("not-the-token")
    await bot.close()
    (call,) = fake.find_calls(route="GET /users/@me")
    assert call.status == 401


async def test_gateway_rejects_a_token_it_does_not_know_with_4004(fake: FakeDiscord) -> None:
    bot = MiniBot()
    await bot.login(TOKEN)
    fake.token = "rotated"  # the token was reset after login: REST said yes, the gateway says no
    with pytest.raises(discord.ConnectionClosed) as caught:
        await asyncio.wait_for(bot.connect(reconnect=True), 5)
    assert caught.value.code == 4004
    await bot.close()


async def test_disallowed_privileged_intent_closes_with_4014() -> None:
    async with FakeDiscord(TOKEN, disallowed_intents=Intents.MESSAGE_CONTENT) as fake:
        with fake.patch_discord_py():
            bot = MiniBot()
            with pytest.raises(discord.PrivilegedIntentsRequired):
                await asyncio.wait_for(bot.start(TOKEN), 5)
            await bot.close()


async def test_reconnect_resumes_and_replays_missed_events(fake: FakeDiscord, bot: MiniBot) -> None:
    session = await fake.wait_until_connected()
    resumed = asyncio.Event()

    async def on_resumed() -> None:
        resumed.set()

    bot.add_listener(on_resumed)
    await fake.request_reconnect()
    await fake.wait_until(lambda: session.connection is None or session.resumes, what="the socket to drop")
    # Dispatched while the client is away: buffered and replayed on RESUME.
    await fake.send_message(fake.channel.id, fake.user, "sent during the reconnect")
    await fake.wait_until(lambda: session.resumes == 1, what="a RESUME")
    await asyncio.wait_for(resumed.wait(), 5)
    await fake.wait_until(lambda: any(e[2:] == ("sent during the reconnect",) for e in bot.events), poll=0.01)
    assert len(fake.sessions) == 1  # resumed, not re-identified


# ------------------------------------------------------------------------------------------------
# Interactions
# ------------------------------------------------------------------------------------------------


async def test_slash_command_with_attachment_is_deferred_then_answered_with_a_file(
    fake: FakeDiscord, bot: MiniBot
) -> None:
    inter = await fake.slash_command(
        "draw",
        {"prompt": "a red apple"},
        user=fake.user,
        attachments={"sketch": ("sketch.png", PNG, "image/png")},
    )
    await fake.wait_for_response(inter)
    assert inter.response_type == 5 and inter.ack_latency is not None and inter.ack_latency < 3.0
    (callback,) = fake.find_calls(route="POST /interactions/{interaction_id}/{token}/callback")
    assert callback.query == {"with_response": "1"} and callback.json == {"type": 5}

    followup = await fake.wait_for_call(route="POST /webhooks/{application_id}/{token}")
    assert followup.multipart and followup.query["wait"] == "1"
    assert followup.payload_json["content"] == "Here is 'a red apple'"
    (file,) = followup.files
    assert file.filename == "result.png" and file.field_name == "files[0]"
    assert file.data == b"IMG:a red apple:" + PNG  # the sketch bytes made the round trip

    sketch_id = next(iter(inter.payload["data"]["resolved"]["attachments"]))
    assert fake.was_downloaded(int(sketch_id))

    # The first follow-up after a thinking defer replaced the loading message.
    message = fake.original_response(inter)
    assert message is not None and message["content"] == "Here is 'a red apple'"
    assert not message["flags"] & MessageFlags.LOADING
    assert message["attachments"][0]["filename"] == "result.png"
    assert message["attachments"][0]["content_type"] == "image/png"
    assert message["components"][0]["components"][0]["custom_id"] == "voxcanvas:regen:42"

    # ...and its button is routed to the DynamicItem.
    click = await fake.click_button(message, "voxcanvas:regen:42", fake.other_user)
    await fake.wait_for_response(click)
    assert ("regen", 42, fake.other_user.id) in bot.events
    assert click.response_type == 4 and click.ephemeral
    assert fake.original_response(click)["content"] == "Regenerating job 42"


async def test_dynamic_item_on_a_channel_message_survives_without_view_state(fake: FakeDiscord, bot: MiniBot) -> None:
    channel = bot.get_channel(fake.channel.id)
    sent = await channel.send("Job 7 is done", view=regen_view(7), reference=None)
    bot._connection._view_store._views.clear()  # as after a restart: only the DynamicItem remains
    stored = fake.get_message(sent.id)
    assert stored["author"]["id"] == str(fake.bot_user.id)
    click = await fake.click_button(sent, "voxcanvas:regen:7", fake.user)
    await fake.wait_for_response(click)
    assert ("regen", 7, fake.user.id) in bot.events


async def test_expired_interaction_token_fails_and_the_channel_still_works(fake: FakeDiscord, bot: MiniBot) -> None:
    fake.token_lifetime = 0.3
    inter = await fake.slash_command("slow", user=fake.user)
    interaction: discord.Interaction = await asyncio.wait_for(bot.pending.get(), 5)
    await fake.wait_until(lambda: time.monotonic() - inter.created_at > 0.35, poll=0.05)

    with pytest.raises(discord.HTTPException) as caught:
        await interaction.followup.send("too late")
    assert caught.value.status == 401 and caught.value.code == 50027
    with pytest.raises(discord.HTTPException):
        await interaction.edit_original_response(content="too late")

    # The product's fallback: post the result to the channel.
    await interaction.channel.send(f"{interaction.user.mention} your picture is ready")
    msg = await fake.wait_for_message(lambda m: "your picture is ready" in m["content"])
    assert msg["mentions"][0]["id"] == str(fake.user.id)


async def test_callback_after_the_ack_deadline_is_unknown_interaction(fake: FakeDiscord, bot: MiniBot) -> None:
    fake.ack_deadline = 0.1
    inter = await fake.slash_command("sleepy", user=fake.user)
    error = await asyncio.wait_for(bot.errors.get(), 5)
    assert isinstance(error, discord.NotFound) and error.code == 10062
    assert not inter.acknowledged


async def test_progress_edits_followups_and_deleting_the_original(fake: FakeDiscord, bot: MiniBot) -> None:
    inter = await fake.slash_command("slow", user=fake.user)
    interaction: discord.Interaction = await asyncio.wait_for(bot.pending.get(), 5)
    loading = fake.original_response(inter)
    assert loading is not None and loading["flags"] & MessageFlags.LOADING and loading["type"] == 20

    edited = await interaction.edit_original_response(content="50% done")
    assert edited.content == "50% done" and edited.id == int(loading["id"])
    assert not fake.original_response(inter)["flags"] & MessageFlags.LOADING
    assert fake.original_response(inter)["edited_timestamp"] is not None

    extra = await interaction.followup.send("only you can see this", ephemeral=True, wait=True)
    assert extra.id != edited.id and extra.flags.ephemeral
    assert [m["content"] for m in fake.followups(inter)] == ["only you can see this"]

    fetched = await interaction.original_response()
    assert fetched.content == "50% done"
    await interaction.delete_original_response()
    assert int(loading["id"]) in fake.deleted_message_ids
    with pytest.raises(discord.NotFound):  # original_response() would answer from its cache
        await interaction.followup.fetch_message(edited.id)


async def test_modal_round_trip(fake: FakeDiscord, bot: MiniBot) -> None:
    opened = await fake.slash_command("ask", user=fake.user)
    await fake.wait_for_response(opened)
    assert opened.response_type == 9 and opened.modal["custom_id"]
    submitted = await fake.submit_modal(opened, {"idea": "a fox in the snow"})
    await fake.wait_for_response(submitted)
    assert fake.original_response(submitted)["content"] == "idea: a fox in the snow"


async def test_select_and_update_message_on_a_persistent_view(fake: FakeDiscord, bot: MiniBot) -> None:
    channel = bot.get_channel(fake.channel.id)
    sent = await channel.send("Pick a style", view=StyleView())

    picked = await fake.click_button(sent, "style", fake.user, values=["ink"])
    await fake.wait_for_response(picked)
    assert picked.response_type == 6
    assert ("style", ("ink",)) in bot.events

    done = await fake.click_button(sent, "done", fake.user)
    await fake.wait_for_response(done)
    assert done.response_type == 7
    message = fake.get_message(sent.id)
    assert message["content"] == "finished" and message["edited_timestamp"] is not None
    button = next(c for row in message["components"] for c in row["components"] if c.get("custom_id") == "done")
    assert button["disabled"] is True
    with pytest.raises(ValueError, match="disabled"):
        await fake.click_button(sent, "done", fake.user)


async def test_dm_history_and_delete(fake: FakeDiscord, bot: MiniBot) -> None:
    user = await bot.fetch_user(fake.user.id)
    dm_message = await user.send("your picture")
    assert dm_message.channel.id == fake.dm_channel_for(fake.user).id
    assert int(fake.find_calls(route="POST /users/@me/channels")[0].json["recipient_id"]) == fake.user.id

    first = await fake.send_message(fake.channel.id, fake.user, "one")
    second = await fake.send_message(fake.channel.id, fake.other_user, "two")
    channel = bot.get_channel(fake.channel.id)
    history = [m async for m in channel.history(limit=10)]
    assert [m.id for m in history] == [int(second["id"]), int(first["id"])]
    fetched = await channel.fetch_message(int(first["id"]))
    assert fetched.content == "one" and fetched.author.id == fake.user.id

    mine = await channel.send("temporary")
    await mine.delete()
    assert mine.id in fake.deleted_message_ids
    with pytest.raises(discord.NotFound):
        await channel.fetch_message(mine.id)


# ------------------------------------------------------------------------------------------------
# Messages
# ------------------------------------------------------------------------------------------------


async def test_voice_message_reaches_on_message_and_is_downloaded(fake: FakeDiscord, bot: MiniBot) -> None:
    sent = await fake.send_voice_message(fake.channel.id, fake.user, OGG, duration_secs=3.5)
    message, attachment, data = await asyncio.wait_for(bot.voice.get(), 5)
    assert message.id == int(sent["id"]) and message.flags.voice
    assert attachment.is_voice_message() and attachment.duration == 3.5
    assert attachment.content_type == "audio/ogg" and attachment.waveform
    assert data == OGG
    assert fake.was_downloaded(sent["attachments"][0])


async def test_direct_messages_voice_note_and_slash_command(fake: FakeDiscord, bot: MiniBot) -> None:
    dm = fake.dm_channel_for(fake.user)
    sent = await fake.send_voice_message(dm.id, fake.user, OGG, duration_secs=1.25)
    message, attachment, data = await asyncio.wait_for(bot.voice.get(), 5)
    assert isinstance(message.channel, discord.DMChannel) and message.guild is None
    assert message.id == int(sent["id"]) and attachment.duration == 1.25 and data == OGG

    inter = await fake.slash_command("draw", {"prompt": "a boat"}, user=fake.user, channel_id=dm.id)
    assert "user" in inter.payload and "member" not in inter.payload
    reply = await fake.wait_for_message(lambda m: m["content"] == "Here is 'a boat'", channel_id=dm.id)
    assert reply["attachments"][0]["filename"] == "result.png"


async def test_attachments_not_read_are_not_downloaded(fake: FakeDiscord, bot: MiniBot) -> None:
    sent = await fake.send_message(fake.channel.id, fake.user, "look", attachments=[("cat.png", PNG)])
    await fake.wait_until(lambda: ("message", int(sent["id"]), "look") in bot.events, poll=0.01)
    assert sent["attachments"][0]["width"] == 16 and sent["attachments"][0]["height"] == 8
    assert not fake.was_downloaded(sent["attachments"][0])
    assert fake.downloads == []


async def test_prefix_command_reply_reaction_and_typing(fake: FakeDiscord, bot: MiniBot) -> None:
    sent = await fake.send_message(fake.channel.id, fake.user, "!ping")
    reply = await fake.wait_for_message(lambda m: m["content"] == "pong")
    assert reply["type"] == 19 and reply["message_reference"]["message_id"] == sent["id"]
    assert reply["referenced_message"]["content"] == "!ping"
    await fake.wait_for_call(method="PUT", path="/channels/*/messages/*/reactions/*/@me")
    assert fake.get_message(sent["id"])["reactions"][0]["emoji"]["name"] == "\N{THUMBS UP SIGN}"
    assert fake.find_calls(route="POST /channels/{channel_id}/typing")

    await bot.http.remove_own_reaction(fake.channel.id, int(sent["id"]), "\N{THUMBS UP SIGN}")
    assert fake.get_message(sent["id"])["reactions"] == []
    with pytest.raises(discord.NotFound):
        await bot.http.remove_own_reaction(fake.channel.id, 1, "\N{THUMBS UP SIGN}")


async def test_message_content_intent_is_enforced() -> None:
    async with FakeDiscord(TOKEN) as fake:
        with fake.patch_discord_py():
            bot = MiniBot(message_content=False)
            task = await start_bot(bot)
            try:
                sent = await fake.send_message(fake.channel.id, fake.user, "secret", attachments=[("a.ogg", OGG)])
                await fake.wait_until(lambda: any(e[1] == int(sent["id"]) for e in bot.events), poll=0.01)
                assert ("message", int(sent["id"]), "") in bot.events
                mention = await fake.send_message(fake.channel.id, fake.user, f"{fake.bot_user.mention} hi")
                await fake.wait_until(lambda: any(e[1] == int(mention["id"]) for e in bot.events), poll=0.01)
                assert ("message", int(mention["id"]), f"{fake.bot_user.mention} hi") in bot.events
            finally:
                await bot.close()
                await task


async def test_a_message_sent_again_with_its_nonce_is_not_created_twice(fake: FakeDiscord, bot: MiniBot) -> None:
    channel = bot.get_channel(fake.channel.id)
    first = await channel.send("delivered once", nonce=4242)
    again = await channel.send("delivered once", nonce=4242)  # e.g. a retry after a lost answer
    assert again.id == first.id and again.nonce == first.nonce == "4242"
    posts = fake.find_calls(route="POST /channels/{channel_id}/messages")
    assert [(c.json["nonce"], c.json["enforce_nonce"], c.status) for c in posts] == [("4242", True, 200)] * 2
    assert [m["id"] for m in fake.find_messages(lambda m: m["content"] == "delivered once")] == [str(first.id)]
    (session,) = fake.sessions.values()
    created = [f for f in session.buffer if f["t"] == "MESSAGE_CREATE" and f["d"]["id"] == str(first.id)]
    assert len(created) == 1

    # A nonce is only unique within its channel, and only enforced when asked for.
    user = await bot.fetch_user(fake.user.id)
    in_dm = await user.send("delivered once", nonce=4242)
    assert in_dm.id != first.id and in_dm.channel.id == fake.dm_channel_for(fake.user).id
    route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=fake.channel.id)
    unenforced = await bot.http.request(route, json={"content": "delivered once", "nonce": "4242"})
    assert int(unenforced["id"]) != first.id and unenforced["nonce"] == "4242"
    assert len(fake.find_messages(lambda m: m["content"] == "delivered once")) == 3


async def test_rate_limit_is_retried_and_unknown_routes_are_recorded(fake: FakeDiscord, bot: MiniBot) -> None:
    fake.fail_next("POST", "/channels/*/messages", status=429, retry_after=0.05)
    channel = bot.get_channel(fake.channel.id)
    await channel.send("after a 429")
    statuses = [c.status for c in fake.find_calls(route="POST /channels/{channel_id}/messages")]
    assert statuses == [429, 200]

    with pytest.raises(discord.NotFound):
        await bot.http.request(discord.http.Route("GET", "/guilds/{guild_id}/audit-logs", guild_id=fake.guild.id))
    (unknown,) = fake.unknown_calls
    assert unknown.path == f"/guilds/{fake.guild.id}/audit-logs" and unknown.status == 404
    fake.calls.remove(unknown)  # expected here; the fixture asserts there are no others


async def test_shutdown_is_clean(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with FakeDiscord(TOKEN) as fake:
            with fake.patch_discord_py():
                bot = MiniBot()
                task = await start_bot(bot)
                inter = await fake.slash_command("draw", {"prompt": "x"}, user=fake.user)
                await fake.wait_for_message(lambda m: m["content"] == "Here is 'x'")
                assert inter.acknowledged
                await bot.close()
                await asyncio.wait_for(task, 5)
        await asyncio.sleep(0)
        gc.collect()
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert others == []
    problems = [r.getMessage() for r in caplog.records if "Unclosed" in r.getMessage() or "destroyed" in r.getMessage()]
    assert problems == []
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
