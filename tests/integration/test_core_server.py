"""Core tracing into a real ``mlflow server`` on 127.0.0.1 (REST span ingestion).

The exporter writes through MLflow's REST store exactly as it writes into sqlite; what
landed is read back through the server with MLflow's client.
"""

from __future__ import annotations

import asyncio

from traces import load_traces, render


def test_qa_program_traced_into_a_live_server(mlflow_server, lm):
    import synalinks

    import synalinks_obs

    class Question(synalinks.DataModel):
        question: str

    class Answer(synalinks.DataModel):
        answer: str

    synalinks_obs.enable(tracking_uri=mlflow_server.uri, experiment_name="remote_core")
    try:

        async def main():
            inputs = synalinks.Input(data_model=Question)
            outputs = await synalinks.Generator(data_model=Answer, language_model=lm, name="gen")(
                inputs
            )
            program = synalinks.Program(inputs=inputs, outputs=outputs, name="remote")
            await asyncio.gather(*(program(Question(question=f"q{i}")) for i in range(5)))

        asyncio.run(main())
        assert synalinks_obs.flush(60)
    finally:
        synalinks_obs.disable()

    traces = load_traces(mlflow_server.uri, "remote_core")
    real = [
        t for t in traces
        if not any(s.attributes.get("synalinks.is_symbolic") for s in t.data.spans)
    ]
    assert len(real) == 5
    for trace in real:
        by_type = sorted(s.span_type for s in trace.data.spans)
        assert by_type == ["CHAIN", "CHAT_MODEL", "LLM"], render(trace)
        root = next(s for s in trace.data.spans if s.parent_id is None)
        assert root.name == "Functional:remote"
        assert root.attributes["synalinks.cost"] > 0
