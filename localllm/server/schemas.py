"""Request bodies of the OpenAI-compatible endpoints, as pydantic models.

Fields OpenAI defines keep its names and ranges; `top_k`, `min_p` and
`repeat_penalty` are llama.cpp-style extensions. A field left out takes
localllm's sampling default (llama.cpp's), as llama-server does. Unknown
fields are ignored, so clients written for newer API versions still work;
known fields that localllm cannot honour are refused in `app.py`. OpenAI's
optional fields may be sent as null, which means their default.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

Number = StrictFloat | StrictInt
Stop = StrictStr | Annotated[list[StrictStr], Field(max_length=16)] | None
TokenIds = Annotated[list[StrictInt], Field(min_length=1)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
    include_usage: StrictBool = False


class SamplingFields(_Body):
    """What completions and chat share."""

    model: StrictStr | None = None
    max_tokens: StrictInt | None = None
    temperature: Annotated[Number, Field(ge=0, le=100)] | None = None
    top_p: Annotated[Number, Field(gt=0, le=1)] | None = None
    top_k: StrictInt | None = None
    min_p: Annotated[Number, Field(ge=0, le=1)] | None = None
    repeat_penalty: Annotated[Number, Field(gt=0)] | None = None
    presence_penalty: Annotated[Number, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[Number, Field(ge=-2, le=2)] | None = None
    seed: Annotated[StrictInt, Field(ge=0)] | None = None
    stop: Stop = None
    n: StrictInt | None = None  # 1
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    logit_bias: dict[StrictStr, Annotated[Number, Field(ge=-100, le=100)]] | None = None
    user: StrictStr | None = None
    ignore_eos: StrictBool | None = None  # extension (as in vLLM and llama-server): end tokens do not stop it


class CompletionRequest(SamplingFields):
    # a string, token ids, or a list of one string (batch-style clients); n=1 serves one prompt
    prompt: StrictStr | TokenIds | Annotated[list[StrictStr], Field(min_length=1, max_length=1)]
    logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    echo: StrictBool | None = None
    suffix: StrictStr | None = None
    best_of: StrictInt | None = None


class TextPart(_Body):
    type: Literal["text"]
    text: StrictStr


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[TextPart]
    name: StrictStr | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: StrictInt | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    tools: list | None = None
    response_format: dict | None = None


class TokenizeRequest(_Body):
    content: StrictStr
    add_special: StrictBool = False  # prepend BOS when the model wants it
    parse_special: StrictBool = False  # "<|im_start|>" in the text becomes its control token


class DetokenizeRequest(_Body):
    tokens: list[StrictInt]
