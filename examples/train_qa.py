"""Training: a question-answering program optimized with few-shot examples for 2 epochs.

    SYNALINKS_OBSERVABILITY=1 python examples/train_qa.py
    python -m synalinks_obs.run examples/train_qa.py

A plain Synalinks program: nothing here is about MLflow. With synalinks-obs active, the
fit() is logged as an MLflow run in the experiment ``qa_training`` (the program's name):
params, per-epoch ``reward`` / ``val_reward``, the program plot under ``program_plots/``,
the training and validation data as the run's datasets, the learned state under
``model/`` (an MLflow model, and each epoch that changed it with a readable diff), the
learned prompt in the Prompt Registry; the traces of the program's calls during fit() are
linked to that run, each with its ``exact_match`` reward as feedback and the expected
answer as expectation (the Traces table shows them as columns). See ``train_restore.py``
to load the learned state and the model back.

Runs offline out of the box (see _offline_lm.py: the offline model always answers
"Paris.", so the reward is the share of questions whose answer is Paris); set
SYNALINKS_EXAMPLE_MODEL (and the provider's key) to train against a real model.
"""

import asyncio

import numpy as np
import synalinks
from _offline_lm import language_model


class Question(synalinks.DataModel):
    question: str = synalinks.Field(description="The user's question")


class Answer(synalinks.DataModel):
    answer: str = synalinks.Field(description="A short answer ending with a period")


TRAIN = [
    ("What is the capital of France?", "Paris."),
    ("Which city is home to the Louvre?", "Paris."),
    ("What is the capital of Italy?", "Rome."),
    ("In which city is the Eiffel Tower?", "Paris."),
    ("What is the capital of Spain?", "Madrid."),
    ("Which city hosts the Musee d'Orsay?", "Paris."),
]
VALIDATION = [
    ("Where is Notre-Dame de Paris?", "Paris."),
    ("What is the capital of Germany?", "Berlin."),
]


def arrays(pairs):
    x = np.array([Question(question=q) for q, _ in pairs], dtype="object")
    y = np.array([Answer(answer=a) for _, a in pairs], dtype="object")
    return x, y


async def build_program(lm=None):
    """The program; ``train_restore.py`` builds a fresh one with the same code."""
    inputs = synalinks.Input(data_model=Question)
    outputs = await synalinks.Generator(
        data_model=Answer,
        language_model=lm or language_model(),
        name="answer_generator",
        description="Answers the user's question",
    )(inputs)
    return synalinks.Program(
        inputs=inputs,
        outputs=outputs,
        name="qa_training",
        description="Question answering, optimized with few-shot examples",
    )


def compile_program(program):
    program.compile(
        reward=synalinks.rewards.ExactMatch(in_mask=["answer"]),
        optimizer=synalinks.optimizers.RandomFewShot(nb_max_examples=2),
    )


async def train(program, callbacks=None):
    x, y = arrays(TRAIN)
    return await program.fit(
        x=x,
        y=y,
        validation_data=arrays(VALIDATION),
        epochs=2,
        batch_size=3,
        callbacks=callbacks,
        verbose=0,
    )


async def main():
    program = await build_program()
    compile_program(program)
    history = await train(program)
    for key, values in history.history.items():
        print(f"{key}: {[round(v, 3) for v in values]}")
    learned = program.trainable_variables[0].get_json()
    print(f"few-shot examples learned: {len(learned.get('examples', []))}")


if __name__ == "__main__":
    asyncio.run(main())
