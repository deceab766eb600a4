using AsyncIterTools.Internal;

namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Runs every piece of <paramref name="work"/> with at most <paramref name="maxConcurrency"/> running at once and
    /// returns their results in input order (Python's <c>asyncio.gather</c> with a concurrency limit).
    /// </summary>
    /// <typeparam name="T">The type of each result.</typeparam>
    /// <param name="work">
    /// Factories that start one piece of work each. Each receives a token that is cancelled when another piece fails or
    /// the caller cancels. The sequence is enumerated lazily, one element each time a slot frees up, and disposed.
    /// </param>
    /// <param name="maxConcurrency">The most pieces of work running at once; <see langword="null"/> for no limit.</param>
    /// <param name="cancellationToken">Cancels the gathering: no new work starts and running work sees its token cancelled.</param>
    /// <returns>The results, in the order of <paramref name="work"/> (not completion order).</returns>
    /// <exception cref="ArgumentNullException"><paramref name="work"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxConcurrency"/> is zero or negative.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (thrown after the running work has finished).</exception>
    /// <exception cref="Exception">
    /// The first failure, in completion order, of a piece of work (a factory that throws, or a faulted or cancelled task),
    /// or of enumerating <paramref name="work"/>; thrown as is, not wrapped in an <see cref="AggregateException"/>.
    /// </exception>
    /// <remarks>
    /// <para>
    /// Work starts in input order. When a piece fails, the others' token is cancelled, nothing new starts, and the method
    /// waits for all running work to finish before it throws: when the returned task completes, in any way, no work is
    /// left running. Failures after the first are observed and dropped. Work that ignores its token is waited for.
    /// </para>
    /// <para>
    /// A factory runs on the thread that completed the previous piece's bookkeeping (no lock is held); each piece starts
    /// without waiting for earlier ones to complete. A factory that throws synchronously counts as a failed piece of work.
    /// </para>
    /// </remarks>
    /// <example>
    /// <code>
    /// Func&lt;CancellationToken, Task&lt;string&gt;&gt;[] work = urls.Select(u => (Func&lt;CancellationToken, Task&lt;string&gt;&gt;)(ct => http.GetStringAsync(u, ct))).ToArray();
    /// string[] pages = await AsyncIter.GatherAsync(work, maxConcurrency: 8, cancellationToken);
    /// </code>
    /// </example>
    public static Task<T[]> GatherAsync<T>(
        IEnumerable<Func<CancellationToken, Task<T>>> work,
        int? maxConcurrency = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(work);
        ValidateMaxConcurrency(maxConcurrency);
        return GatherCoreAsync(work, maxConcurrency ?? int.MaxValue, cancellationToken);

        static async Task<T[]> GatherCoreAsync(IEnumerable<Func<CancellationToken, Task<T>>> work, int maxConcurrency, CancellationToken cancellationToken)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var results = new ResultBuffer<T>(ResultBuffer<T>.CountHint(work));
            using var runner = new WorkRunner<T>(work, maxConcurrency, ownsWork: true, cancellationToken);
            try
            {
                runner.Fill();
                while (runner.Running > 0)
                {
                    WorkRunner<T>.Completion completion = await runner.NextAsync(CancellationToken.None);
                    try
                    {
                        T value = completion.GetResult();
                        results.Set(completion.Index, value);
                    }
                    catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
                    {
                        runner.Fail(ex);
                    }
                    catch (Exception)
                    {
                        // Work failing because the caller cancelled is reported as the caller's cancellation below.
                        runner.Stop();
                    }

                    runner.Fill();
                }
            }
            finally
            {
                runner.Stop();
                await runner.DrainAsync();
            }

            runner.Failure?.Throw();
            cancellationToken.ThrowIfCancellationRequested();
            return results.ToArray();
        }
    }

    /// <summary>Throws if a <c>maxConcurrency</c> argument is present and not positive.</summary>
    private static void ValidateMaxConcurrency(int? maxConcurrency)
    {
        if (maxConcurrency is { } max)
        {
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(max, nameof(maxConcurrency));
        }
    }
}
