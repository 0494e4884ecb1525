"""Talks to a running `paligemma serve` through OpenAI's official Python client, as a third-party
tool would, and prints what it saw as one JSON object (checked by ServerTests).

    python openai_client.py PORT IMAGE PROMPT MAX_TOKENS
"""
import base64
import json
import sys

import openai

port, image, prompt, max_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
url = "data:image/jpeg;base64," + base64.b64encode(open(image, "rb").read()).decode()
messages = [{"role": "user", "content": [
    {"type": "text", "text": prompt},
    {"type": "image_url", "image_url": {"url": url}},
]}]
out = {"models": [m.id for m in client.models.list().data]}

plain = client.chat.completions.create(model="paligemma", messages=messages, max_tokens=max_tokens,
                                       temperature=0, logprobs=True)
choice = plain.choices[0]
out["plain"] = {
    "object": plain.object, "id": plain.id, "content": choice.message.content, "role": choice.message.role,
    "finish_reason": choice.finish_reason, "logprobs": [t.logprob for t in choice.logprobs.content],
    "usage": [plain.usage.prompt_tokens, plain.usage.completion_tokens, plain.usage.total_tokens],
}

pieces, finishes, usage, objects = [], [], None, set()
for chunk in client.chat.completions.create(model="paligemma", messages=messages, max_tokens=max_tokens,
                                            temperature=0, stream=True, stream_options={"include_usage": True}):
    objects.add(chunk.object)
    if chunk.usage is not None:
        usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens, chunk.usage.total_tokens]
    for c in chunk.choices:
        if c.delta.content:
            pieces.append(c.delta.content)
        if c.finish_reason:
            finishes.append(c.finish_reason)
out["stream"] = {"content": "".join(pieces), "chunks": len(pieces), "finish_reasons": finishes, "usage": usage,
                 "objects": sorted(objects)}

# A stop string cuts the answer before it.
if len(out["plain"]["content"]) > 2:
    stop = out["plain"]["content"][1:3]
    cut = client.chat.completions.create(model="paligemma", messages=messages, max_tokens=max_tokens, temperature=0, stop=[stop])
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="paligemma", messages=messages, max_tokens=max_tokens, temperature=0, stop=stop, stream=True) if c.choices)
    out["stop"] = {"stop": stop, "content": cut.choices[0].message.content, "finish_reason": cut.choices[0].finish_reason,
                   "streamed": streamed}

# Errors arrive in OpenAI's shape, so the client raises its typed exceptions.
try:
    client.chat.completions.create(model="paligemma", messages=[{"role": "user", "content": "caption en"}])
    out["error"] = None
except openai.BadRequestError as e:
    out["error"] = {"status": e.status_code, "message": e.message, "code": e.code, "param": e.param}
print(json.dumps(out))
