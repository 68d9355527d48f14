// The `openai` npm SDK through the gateway: one check per run, named in argv[2]; exits non-zero
// (with the error) when the answer is not what its user expects.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.GATEWAY_BASE_URL, apiKey: process.env.GATEWAY_KEY, maxRetries: 0 });
const model = process.env.GATEWAY_MODEL;
const ask = [{ role: "user", content: "Weather in Oslo?" }];
const weather = {
  name: "lookup_weather",
  description: "Current weather in a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
};
const check = (ok, what) => { if (!ok) throw new Error(what); };

const checks = {
  async chat() {
    const answer = await client.chat.completions.create({ model, messages: ask });
    check(answer.choices[0].message.content, "no text");
    return answer.choices[0].message.content;
  },
  async stream() {
    const stream = await client.chat.completions.create({ model, messages: ask, stream: true, stream_options: { include_usage: true } });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
    check(text, "no streamed text");
    return text;
  },
  async tools() {
    const tools = [{ type: "function", function: weather }];
    const first = await client.chat.completions.create({ model, messages: ask, tools });
    const message = first.choices[0].message;
    const [call] = message.tool_calls ?? [];
    check(call?.function.name === "lookup_weather", "no tool call");
    const result = { role: "tool", tool_call_id: call.id, content: "Sunny" };
    const second = await client.chat.completions.create({ model, messages: [...ask, message, result], tools });
    check(second.choices[0].message.content?.includes("Sunny"), "tool result not answered");
    return second.choices[0].message.content;
  },
  async responses() {
    const tools = [{ type: "function", ...weather }];
    const stream = client.responses.stream({ model, input: "Weather in Oslo?", tools });
    const first = await stream.finalResponse();
    const call = first.output.find((item) => item.type === "function_call");
    check(call, "no function_call item");
    const input = [{ role: "user", content: "Weather in Oslo?" }, call, { type: "function_call_output", call_id: call.call_id, output: "Sunny" }];
    const second = await client.responses.create({ model, input, tools });
    check(second.output_text.includes("Sunny"), "function output not answered");
    return second.output_text;
  },
  async structured() {
    const format = { name: "weather", strict: true, schema: { type: "object", properties: { city: { type: "string" }, sunny: { type: "boolean" } }, required: ["city", "sunny"], additionalProperties: false } };
    const chat = await client.chat.completions.create({ model, messages: ask, response_format: { type: "json_schema", json_schema: format } });
    check(typeof JSON.parse(chat.choices[0].message.content).sunny === "boolean", "chat answer not in the schema");
    const answer = await client.responses.create({ model, input: "Weather in Oslo?", text: { format: { type: "json_schema", ...format } } });
    const parsed = JSON.parse(answer.output_text);
    check(typeof parsed.sunny === "boolean", "Responses answer not in the schema");
    return JSON.stringify(parsed);
  },
  async embeddings() {
    const answer = await client.embeddings.create({ model: "text-embedding-3-small", input: "hello" });
    check(answer.data[0].embedding.length > 0, "no vector");
    return `${answer.data[0].embedding.length} dimensions`;
  },
};

console.log(await checks[process.argv[2]]());
