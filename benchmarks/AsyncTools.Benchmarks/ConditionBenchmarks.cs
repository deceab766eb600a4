using AsyncPrimitives;
using BenchmarkDotNet.Attributes;
using NitoConditionVariable = Nito.AsyncEx.AsyncConditionVariable;
using NitoLock = Nito.AsyncEx.AsyncLock;

namespace AsyncTools.Benchmarks;

/// <summary>
/// Two tasks take turns through a condition variable, per turn: under the lock, wait until it is my turn, pass the
/// turn, notify. Every turn wakes a waiter, so each costs a wake-up through the thread pool. The BCL has no async
/// condition variable: the baseline is the peer, Nito.AsyncEx's AsyncConditionVariable, in the same loop.
/// </summary>
public class ConditionBenchmarks
{
    private const int Turns = 2_000;

    [Benchmark(Baseline = true, OperationsPerInvoke = Turns)]
    public Task Nito_AsyncConditionVariable()
    {
        var gate = new NitoLock();
        var condition = new NitoConditionVariable(gate);
        int turn = 0;
        return Task.WhenAll(Task.Run(() => Player(0)), Task.Run(() => Player(1)));

        async Task Player(int me)
        {
            for (int i = 0; i < Turns / 2; i++)
            {
                using (await gate.LockAsync())
                {
                    while (turn != me)
                    {
                        await condition.WaitAsync();
                    }

                    turn = 1 - me;
                    condition.Notify();
                }
            }
        }
    }

    [Benchmark(OperationsPerInvoke = Turns)]
    public Task AsyncCondition()
    {
        var condition = new AsyncCondition();
        int turn = 0;
        return Task.WhenAll(Task.Run(() => Player(0)), Task.Run(() => Player(1)));

        async Task Player(int me)
        {
            for (int i = 0; i < Turns / 2; i++)
            {
                using (await condition.AcquireAsync())
                {
                    while (turn != me)
                    {
                        await condition.WaitAsync();
                    }

                    turn = 1 - me;
                    condition.Notify();
                }
            }
        }
    }
}
