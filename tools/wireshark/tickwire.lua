-- Tickwire wire protocol v1 (docs/PROTOCOL.md) for Wireshark / tshark.
--
--   wireshark -X lua_script:tools/wireshark/tickwire.lua capture.pcapng
--   tshark -X lua_script:tools/wireshark/tickwire.lua -r capture.pcapng -V
--   (or copy this file into ~/.local/lib/wireshark/plugins/)
--
-- A heuristic dissector on UDP: any datagram whose first bytes are the magic
-- "TW" and version 1 is decoded, whatever its ports (client --record writes
-- every packet as a UDP frame, TCP feeds included). It decodes the header
-- (§ 2.1), checks the CRC32C (§ 2.2, expert error on a mismatch), every
-- packet kind (§ 3; unknown kinds are shown as such), the timing block and
-- the Quote/Trade/unknown messages (§ 4; a Trade's symbol_seq is
-- tickwire.trade.symbol_seq, "not carried" when 0), snapshot parts (§ 5), the
-- LoginAck/NackReject/Status bodies and tokens (§ 6, § 10.1) and the MAC
-- tag (§ 12). Sequence gaps of each session's live stream (Data and
-- Heartbeat, both lines merged) are flagged with expert info, and so are
-- retransmissions and duplicate copies.

local tw = Proto("tickwire", "Tickwire market data")

local KINDS = {
    [1] = "Data", [2] = "Heartbeat", [3] = "Retransmission", [4] = "Snapshot",
    [5] = "EndOfSession", [6] = "LoginAck", [7] = "NackReject", [8] = "Status",
    [9] = "RepairNotice",
    [16] = "Nack", [17] = "SnapshotRequest", [18] = "Login", [19] = "Probe",
}
local MSG_TYPES = { [0x51] = "Quote", [0x54] = "Trade" }
local SIDES = { [1] = "Buy", [2] = "Sell" }
local MODES = { [0] = "Resume", [1] = "Snapshot" }
local STATES = { [0] = "live", [1] = "ended" }

local F = tw.fields
local function u64(name, base_) return ProtoField.uint64("tickwire." .. name, name, base_ or base.DEC) end
local function i64(name) return ProtoField.int64("tickwire." .. name, name, base.DEC) end
local function u32(name, base_) return ProtoField.uint32("tickwire." .. name, name, base_ or base.DEC) end
local function u16(name, vs) return ProtoField.uint16("tickwire." .. name, name, base.DEC, vs) end

F.magic = ProtoField.uint16("tickwire.magic", "magic", base.HEX)
F.version = ProtoField.uint8("tickwire.version", "version", base.DEC)
F.kind = ProtoField.uint8("tickwire.kind", "kind", base.DEC, KINDS)
F.count = u16("count")
F.flags = ProtoField.uint16("tickwire.flags", "flags", base.DEC)
F.flag_b = ProtoField.bool("tickwire.flags.line_b", "line B", 16, nil, 0x0001)
F.flag_timing = ProtoField.bool("tickwire.flags.timing", "timing block", 16, nil, 0x0002)
F.flag_cookie = ProtoField.bool("tickwire.flags.cookie", "cookie", 16, nil, 0x0004)
F.flag_mac = ProtoField.bool("tickwire.flags.mac", "MAC", 16, nil, 0x0008)
F.epoch = u64("epoch")
F.first_seq = u64("first_seq")
F.send_time = u64("send_time")
F.payload_len = u32("payload_len")
F.crc = u32("crc", base.HEX)
F.crc_status = ProtoField.string("tickwire.crc_status", "crc_status")
F.line = ProtoField.string("tickwire.line", "line")
F.padding = u32("padding")
-- Timing block
F.first_due = u64("first_due")
F.last_due = u64("last_due")
-- Messages
F.message = ProtoField.none("tickwire.message", "message")
F.seq = u64("seq")
F.mtype = ProtoField.uint8("tickwire.type", "type", base.HEX, MSG_TYPES)
F.mflags = ProtoField.uint8("tickwire.msg_flags", "flags", base.DEC)
F.side = ProtoField.uint8("tickwire.side", "side", base.DEC, SIDES)
F.length = u16("length")
F.symbol = u32("symbol")
F.bid_px = i64("bid_px")
F.ask_px = i64("ask_px")
F.bid_qty = u32("bid_qty")
F.ask_qty = u32("ask_qty")
F.exch_ts = u64("exch_ts")
F.symbol_seq = u64("symbol_seq")
F.price = i64("price")
F.qty = u32("qty")
-- A Trade's update number (§ 4.2): the low 32 bits of the symbol's counter,
-- 0 when the publisher predates the field. The Quote's whole one is
-- tickwire.symbol_seq.
F.trade_symbol_seq = ProtoField.uint32("tickwire.trade.symbol_seq", "symbol_seq", base.DEC)
F.body = ProtoField.bytes("tickwire.body", "body")
-- Snapshot
F.part = u16("part")
F.parts = u16("parts")
F.symbols = u32("symbols")
F.record = ProtoField.none("tickwire.record", "record")
F.last_qty = u32("last_qty")
F.last_px = i64("last_px")
F.updates = u64("updates")
F.last_seq = u64("last_seq")
-- Control bodies
F.oldest = u64("oldest")
F.mode = ProtoField.uint8("tickwire.mode", "mode", base.DEC, MODES)
F.next = u64("next")
F.cookie = u64("cookie", base.HEX)
F.echo = u64("echo", base.HEX)
F.instance = u64("instance", base.HEX)
F.state = ProtoField.uint8("tickwire.state", "state", base.DEC, STATES)
F.ended = ProtoField.bool("tickwire.ended", "ended")
F.token = u64("token", base.HEX)
F.mac = ProtoField.bytes("tickwire.mac", "mac")
F.unknown_payload = ProtoField.bytes("tickwire.unknown_payload", "payload")
F.gap = u64("gap")

local E = {
    bad_crc = ProtoExpert.new("tickwire.bad_crc", "Bad CRC32C", expert.group.CHECKSUM, expert.severity.ERROR),
    malformed = ProtoExpert.new("tickwire.malformed", "Malformed Tickwire packet", expert.group.MALFORMED, expert.severity.ERROR),
    gap = ProtoExpert.new("tickwire.gap", "Sequence gap", expert.group.SEQUENCE, expert.severity.WARN),
    retransmission = ProtoExpert.new("tickwire.retransmission", "Retransmission", expert.group.SEQUENCE, expert.severity.NOTE),
    duplicate = ProtoExpert.new("tickwire.duplicate", "Duplicate", expert.group.SEQUENCE, expert.severity.NOTE),
    unknown_kind = ProtoExpert.new("tickwire.unknown_kind", "Unknown packet kind", expert.group.UNDECODED, expert.severity.NOTE),
}
tw.experts = { E.bad_crc, E.malformed, E.gap, E.retransmission, E.duplicate, E.unknown_kind }

-- CRC-32C (Castagnoli), reflected 0x82F63B78.
local CRC_TABLE = {}
for i = 0, 255 do
    local c = i
    for _ = 1, 8 do
        if bit32.band(c, 1) == 1 then c = bit32.bxor(bit32.rshift(c, 1), 0x82F63B78) else c = bit32.rshift(c, 1) end
    end
    CRC_TABLE[i] = c
end
local function crc32c(tvb, ranges)
    local c = 0xFFFFFFFF
    for _, r in ipairs(ranges) do
        local bytes = tvb:range(r[1], r[2]):bytes()
        for i = 0, r[2] - 1 do
            c = bit32.bxor(CRC_TABLE[bit32.band(bit32.bxor(c, bytes:get_index(i)), 0xFF)], bit32.rshift(c, 8))
        end
    end
    return bit32.bxor(c, 0xFFFFFFFF)
end

-- Per session: the next sequence of the live stream; per frame: what the
-- first pass found (so a second pass shows the same).
local next_seq = {}
local verdicts = {}
function tw.init()
    next_seq = {}
    verdicts = {}
end

local function seq_verdict(pinfo, kind, epoch, first, count)
    local v = verdicts[pinfo.number]
    if v ~= nil then return v end
    local key = tostring(epoch)
    local expected = next_seq[key]
    v = { kind = "ok" }
    local last = first + count -- one past
    if kind == 3 then
        v = { kind = "retransmission" }
    elseif expected ~= nil and first > expected then
        v = { kind = "gap", from = expected, to = first - 1, missing = first - expected }
    elseif expected ~= nil and count > 0 and last <= expected then
        v = { kind = "duplicate" }
    end
    if kind ~= 3 and (expected == nil or last > expected) then
        next_seq[key] = last
    end
    verdicts[pinfo.number] = v
    return v
end

local function add_quote(t, tvb, o)
    t:add_le(F.symbol, tvb(o + 4, 4)); t:add_le(F.bid_px, tvb(o + 8, 8)); t:add_le(F.ask_px, tvb(o + 16, 8))
    t:add_le(F.bid_qty, tvb(o + 24, 4)); t:add_le(F.ask_qty, tvb(o + 28, 4)); t:add_le(F.exch_ts, tvb(o + 32, 8))
    t:add_le(F.symbol_seq, tvb(o + 40, 8))
end

local function add_trade(t, tvb, o)
    t:add_le(F.symbol, tvb(o + 4, 4)); t:add_le(F.price, tvb(o + 8, 8)); t:add_le(F.qty, tvb(o + 16, 4))
    local ss = t:add_le(F.trade_symbol_seq, tvb(o + 20, 4))
    if tvb(o + 20, 4):le_uint() == 0 then ss:append_text(" (not carried)") end
    t:add_le(F.exch_ts, tvb(o + 24, 8))
end

-- Messages from payload offset `o` to `stop`; returns how many were decoded.
local function add_messages(tree, tvb, o, stop, count, first_seq)
    local i = 0
    while i < count do
        if o + 4 > stop then tree:add_proto_expert_info(E.malformed, "fewer messages than count"); return i end
        local mtype = tvb(o, 1):uint()
        local len = tvb(o + 2, 2):le_uint()
        if len < 4 or o + len > stop then tree:add_proto_expert_info(E.malformed, "message length " .. len .. " out of bounds"); return i end
        local name = MSG_TYPES[mtype] or string.format("Unknown (0x%02x)", mtype)
        local t = tree:add(F.message, tvb(o, len))
        t:set_text(string.format("message: %s, seq %s", name, tostring(first_seq + i)))
        t:add(F.seq, first_seq + i):set_generated()
        t:add(F.mtype, tvb(o, 1))
        if mtype == 0x54 then t:add(F.side, tvb(o + 1, 1)) else t:add(F.mflags, tvb(o + 1, 1)) end
        t:add_le(F.length, tvb(o + 2, 2))
        if mtype == 0x51 and len == 48 then add_quote(t, tvb, o)
        elseif mtype == 0x54 and len == 32 then add_trade(t, tvb, o)
        elseif MSG_TYPES[mtype] then t:add_proto_expert_info(E.malformed, name .. " of length " .. len)
        elseif len > 4 then t:add(F.body, tvb(o + 4, len - 4)) end
        o = o + len
        i = i + 1
    end
    if o < stop then tree:add_proto_expert_info(E.malformed, (stop - o) .. " bytes after the last message") end
    return i
end

local function dissect(tvb, pinfo, root)
    local len = tvb:len()
    if len < 40 or tvb(0, 2):le_uint() ~= 0x5754 or tvb(2, 1):uint() ~= 1 then return 0 end
    local kind = tvb(3, 1):uint()
    local count = tvb(4, 2):le_uint()
    local flags = tvb(6, 2):le_uint()
    local epoch = tvb(8, 8):le_uint64()
    local first_seq = tvb(16, 8):le_uint64()
    local plen = tvb(32, 4):le_uint()
    local kind_name = KINDS[kind] or string.format("Unknown (%d)", kind)
    pinfo.cols.protocol = "Tickwire"
    local total = math.min(40 + plen, len)
    local tree = root:add(tw, tvb(0, total))
    tree:append_text(string.format(", %s, seq %s, count %d", kind_name, tostring(first_seq), count))

    local h = tree:add(tvb(0, 40), "header")
    h:set_text("header")
    h:add_le(F.magic, tvb(0, 2)); h:add(F.version, tvb(2, 1)); h:add(F.kind, tvb(3, 1))
    h:add_le(F.count, tvb(4, 2))
    local ft = h:add_le(F.flags, tvb(6, 2))
    ft:add_le(F.flag_b, tvb(6, 2)); ft:add_le(F.flag_timing, tvb(6, 2)); ft:add_le(F.flag_cookie, tvb(6, 2)); ft:add_le(F.flag_mac, tvb(6, 2))
    h:add(F.line, (bit32.band(flags, 1) == 1) and "B" or "A"):set_generated()
    h:add_le(F.epoch, tvb(8, 8)); h:add_le(F.first_seq, tvb(16, 8)); h:add_le(F.send_time, tvb(24, 8))
    h:add_le(F.payload_len, tvb(32, 4))
    local crc_item = h:add_le(F.crc, tvb(36, 4))

    local info = string.format("%s seq=%s count=%d", kind_name, tostring(first_seq), count)
    if plen > 65496 or 40 + plen > len then
        tree:add_proto_expert_info(E.malformed, "payload_len " .. plen .. " beyond the datagram")
        pinfo.cols.info = "Tickwire " .. info .. " [truncated]"
        return len
    end
    local ranges = { { 0, 36 } }
    if plen > 0 then ranges[2] = { 40, plen } end
    local crc = crc32c(tvb, ranges)
    if crc == tvb(36, 4):le_uint() then
        h:add(F.crc_status, "good"):set_generated()
    else
        h:add(F.crc_status, "bad"):set_generated()
        crc_item:add_proto_expert_info(E.bad_crc, string.format("Bad CRC32C: computed 0x%08x", crc))
        info = info .. " [BAD CRC]"
    end
    if len > 40 + plen then h:add(F.padding, len - 40 - plen):set_generated() end

    -- The MAC tag ends the payload (§ 12).
    local stop = 40 + plen
    if bit32.band(flags, 8) == 8 and plen >= 16 then
        stop = stop - 16
        tree:add(F.mac, tvb(stop, 16))
    end
    local body = stop - 40
    if kind == 1 or kind == 3 then
        local o = 40
        if kind == 1 and bit32.band(flags, 2) == 2 then
            if body < 16 then
                tree:add_proto_expert_info(E.malformed, "timing flag set, payload shorter than the block")
            else
                local t = tree:add(tvb(40, 16), "timing")
                t:set_text("timing")
                t:add_le(F.first_due, tvb(40, 8)); t:add_le(F.last_due, tvb(48, 8))
                o = 56
            end
        end
        add_messages(tree, tvb, o, stop, count, first_seq)
    elseif kind == 4 then
        if body < 8 then
            tree:add_proto_expert_info(E.malformed, "snapshot part shorter than its header")
        else
            local t = tree:add(tvb(40, 8), "snapshot")
            t:set_text("snapshot")
            t:add_le(F.part, tvb(40, 2)); t:add_le(F.parts, tvb(42, 2)); t:add_le(F.symbols, tvb(44, 4))
            info = info .. string.format(" part %d/%d", tvb(40, 2):le_uint(), tvb(42, 2):le_uint())
            if body ~= 8 + 56 * count then tree:add_proto_expert_info(E.malformed, "payload_len is not 8 + 56 x count") end
            local o = 48
            for _ = 1, count do
                if o + 56 > stop then break end
                local r = tree:add(F.record, tvb(o, 56))
                r:set_text("record: symbol " .. tvb(o, 4):le_uint())
                r:add_le(F.symbol, tvb(o, 4)); r:add_le(F.bid_qty, tvb(o + 4, 4)); r:add_le(F.ask_qty, tvb(o + 8, 4))
                r:add_le(F.last_qty, tvb(o + 12, 4)); r:add_le(F.bid_px, tvb(o + 16, 8)); r:add_le(F.ask_px, tvb(o + 24, 8))
                r:add_le(F.last_px, tvb(o + 32, 8)); r:add_le(F.updates, tvb(o + 40, 8)); r:add_le(F.last_seq, tvb(o + 48, 8))
                o = o + 56
            end
        end
    elseif kind == 6 or kind == 7 then
        if body ~= 16 then
            tree:add_proto_expert_info(E.malformed, "body of " .. body .. " bytes, not 16")
        else
            local t = tree:add(tvb(40, 16), kind == 6 and "login_ack" or "nack_reject")
            t:set_text(kind == 6 and "login_ack" or "nack_reject")
            t:add_le(F.oldest, tvb(40, 8))
            if kind == 6 then t:add(F.mode, tvb(48, 1)) else t:add_le(F.next, tvb(48, 8)) end
        end
    elseif kind == 8 then
        if body ~= 32 then
            tree:add_proto_expert_info(E.malformed, "body of " .. body .. " bytes, not 32")
        else
            local t = tree:add(tvb(40, 32), "status")
            t:set_text("status")
            t:add_le(F.cookie, tvb(40, 8)); t:add_le(F.echo, tvb(48, 8)); t:add_le(F.instance, tvb(56, 8))
            t:add(F.state, tvb(64, 1))
            t:add(F.ended, tvb(64, 1), tvb(64, 1):uint() == 1)
        end
    elseif kind == 19 or ((kind == 16 or kind == 17) and bit32.band(flags, 4) == 4) then
        if body ~= 8 then tree:add_proto_expert_info(E.malformed, "token of " .. body .. " bytes, not 8")
        else tree:add_le(F.token, tvb(40, 8)) end
    elseif KINDS[kind] == nil then
        tree:add_proto_expert_info(E.unknown_kind, "Unknown packet kind " .. kind)
        if body > 0 then tree:add(F.unknown_payload, tvb(40, body)) end
    elseif body ~= 0 then
        tree:add_proto_expert_info(E.malformed, kind_name .. " with a payload of " .. body .. " bytes")
    end

    -- The live stream's sequence: gaps, retransmissions, duplicates.
    if kind == 1 or kind == 2 or kind == 3 then
        local v = seq_verdict(pinfo, kind, epoch, first_seq, kind == 2 and 0 or count)
        if v.kind == "gap" then
            local g = tree:add(F.gap, v.missing):set_generated()
            g:add_proto_expert_info(E.gap, string.format("Sequence gap: %s missing (%s..=%s)",
                tostring(v.missing), tostring(v.from), tostring(v.to)))
            info = info .. string.format(" [GAP %s missing]", tostring(v.missing))
        elseif v.kind == "retransmission" then
            tree:add_proto_expert_info(E.retransmission, string.format("Retransmission of %s..%s",
                tostring(first_seq), tostring(first_seq + count)))
            info = info .. " [retransmission]"
        elseif v.kind == "duplicate" then
            tree:add_proto_expert_info(E.duplicate, "Duplicate (A/B or repeated copy)")
            info = info .. " [duplicate]"
        end
    end
    pinfo.cols.info = "Tickwire " .. info
    return len
end

function tw.dissector(tvb, pinfo, root)
    return dissect(tvb, pinfo, root)
end

local function heuristic(tvb, pinfo, root)
    if tvb:len() < 40 or tvb(0, 2):le_uint() ~= 0x5754 or tvb(2, 1):uint() ~= 1 then return false end
    dissect(tvb, pinfo, root)
    return true
end

tw:register_heuristic("udp", heuristic)
DissectorTable.get("udp.port"):add_for_decode_as(tw)
