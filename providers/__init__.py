"""Calling a model: provider models through pydantic-ai, the OpenAI wire format spoken directly,
a team's own HTTP endpoint, and the offline demo provider. Below the entities, so that both the
run engine and a model configuration's connection test call models the same way."""
