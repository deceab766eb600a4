namespace AsyncIterTools.Tests;

/// <summary>Enumeration patterns shared by the sequence-operator tests.</summary>
public static class OperatorChecks
{
    /// <summary>Enumerates <paramref name="sequence"/> to the end, optionally with a token.</summary>
    public static async Task<List<T>> CollectAsync<T>(IAsyncEnumerable<T> sequence, CancellationToken cancellationToken = default)
    {
        var items = new List<T>();
        await foreach (T item in sequence.WithCancellation(cancellationToken))
        {
            items.Add(item);
        }

        return items;
    }

    /// <summary>Reads <paramref name="count"/> items (at least one), then leaves the loop with <c>break</c>.</summary>
    public static async Task<List<T>> TakeThenBreakAsync<T>(IAsyncEnumerable<T> sequence, int count)
    {
        var items = new List<T>();
        await foreach (T item in sequence)
        {
            items.Add(item);
            if (items.Count == count)
            {
                break;
            }
        }

        return items;
    }

    /// <summary>
    /// Enumerates with a token, cancels it once <paramref name="after"/> items were seen (0: before the first
    /// MoveNextAsync), asserts that enumeration then ends with <see cref="OperationCanceledException"/>, and returns
    /// the token so the caller can check it reached the sources.
    /// </summary>
    public static async Task<CancellationToken> CancelAfterAsync<T>(IAsyncEnumerable<T> sequence, int after)
    {
        using var cts = new CancellationTokenSource();
        int seen = 0;
        if (after == 0)
        {
            cts.Cancel();
        }

        Func<Task> act = async () =>
        {
            await foreach (T _ in sequence.WithCancellation(cts.Token))
            {
                if (++seen == after)
                {
                    cts.Cancel();
                }
            }
        };
        await act.Should().ThrowAsync<OperationCanceledException>();
        seen.Should().Be(after);
        return cts.Token;
    }

    /// <summary>Enumerates to the end expecting the source's failure.</summary>
    public static async Task<List<T>> CollectExpectingFailureAsync<T, TException>(IAsyncEnumerable<T> sequence)
        where TException : Exception
    {
        var items = new List<T>();
        Func<Task> act = async () =>
        {
            await foreach (T item in sequence)
            {
                items.Add(item);
            }
        };
        await act.Should().ThrowAsync<TException>();
        return items;
    }
}
