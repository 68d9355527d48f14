// The Vercel AI SDK (`ai`) through the gateway: `@ai-sdk/openai-compatible` for chat, streams,
// tools and embeddings, `@ai-sdk/openai` for the Responses API. One check per run (argv[2]).
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { createOpenAI } from "@ai-sdk/openai";
import { embed, generateObject, generateText, jsonSchema, stepCountIs, streamText, tool } from "ai";

const settings = { baseURL: process.env.GATEWAY_BASE_URL, apiKey: process.env.GATEWAY_KEY };
const compatible = createOpenAICompatible({ name: "gateway", includeUsage: true, ...settings });
const openai = createOpenAI(settings);
const modelId = process.env.GATEWAY_MODEL;
const prompt = "Weather in Oslo?";
const tools = {
  lookup_weather: tool({
    description: "Current weather in a city",
    inputSchema: jsonSchema({ type: "object", properties: { city: { type: "string" } }, required: ["city"] }),
    execute: async () => "Sunny",
  }),
};
const check = (ok, what) => { if (!ok) throw new Error(what); };

async function loop(model) {
  const result = streamText({ model, prompt, tools, stopWhen: stepCountIs(3), maxRetries: 0 });
  const text = await result.text;
  const steps = await result.steps;
  check(steps[0].toolCalls.length === 1, "no tool call");
  check(text.includes("Sunny"), "tool result not answered");
  return text;
}

const checks = {
  async chat() {
    const { text } = await generateText({ model: compatible(modelId), prompt, maxRetries: 0 });
    check(text, "no text");
    return text;
  },
  async stream() {
    const result = streamText({ model: compatible(modelId), prompt, maxRetries: 0 });
    let text = "";
    for await (const part of result.textStream) text += part;
    check(text, "no streamed text");
    return text;
  },
  tools: () => loop(compatible(modelId)),
  responses: () => loop(openai.responses(modelId)),
  async structured() {
    const schema = jsonSchema({ type: "object", properties: { city: { type: "string" }, sunny: { type: "boolean" } }, required: ["city", "sunny"], additionalProperties: false });
    const { object } = await generateObject({ model: openai.responses(modelId), schema, prompt, maxRetries: 0 });
    check(typeof object.sunny === "boolean", "answer not in the schema");
    return JSON.stringify(object);
  },
  async embeddings() {
    const { embedding } = await embed({ model: compatible.embeddingModel("text-embedding-3-small"), value: "hello", maxRetries: 0 });
    check(embedding.length > 0, "no vector");
    return `${embedding.length} dimensions`;
  },
};

console.log(await checks[process.argv[2]]());
